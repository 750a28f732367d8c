"""p2pk: peer-to-peer federated learning with K-SMOTE rebalancing (P2PK-SMOTE).

Wang, Muñoz-González, Eklund and Raza, "Peer-to-peer federated learning for IoT anomaly
detection with K-SMOTE", WiSec '21. Module names follow the paper's concepts.
"""

__version__ = "0.1.0"
