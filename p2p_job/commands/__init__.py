"""One module per ``p2pk`` command; each defines ``register(subparsers)``.

Commands let :class:`p2p_job.spec.InvalidSpec` propagate: ``p2pk`` prints it (every error by
field path) and exits with :data:`EXIT_INVALID`.
"""

#: Exit code for an invalid spec or bad arguments (argparse also uses 2 for usage errors).
EXIT_INVALID = 2
