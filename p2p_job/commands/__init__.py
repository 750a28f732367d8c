"""One module per ``p2pk`` command; each defines ``register(subparsers)``."""
