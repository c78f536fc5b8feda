"""What hack/control-plane, hack/argocd, hack/bench and the tests share: waiting on a condition
with a deadline (waiting.py), the progress log (console.py), pins, the cache and its locks, Go
builds (build.py), and the processes they start (processes.py). Standard library only: the
launchers run before any virtualenv. The tests import it too (pytest's pythonpath has hack/);
nothing here imports the tests."""
