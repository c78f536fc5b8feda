"""`hack/argocd`: Argo CD built from its Go module and run as local processes against the
cluster of `hack/control-plane` (see cli.py for the commands).

Standard library only: it runs before any virtualenv exists, as root under CI, with no stdin.
"""
