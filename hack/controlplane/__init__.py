"""`hack/control-plane`'s code: a real Kubernetes control plane and node built from Go modules,
and the operator's image built without Docker (see cli.py for the commands). Standard library
only: it runs before any virtualenv exists."""
