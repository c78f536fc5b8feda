"""Client for Zomro's BILLmanager API. Knows HTTP and Zomro, nothing of Kubernetes."""
