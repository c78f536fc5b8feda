"""The first-hour tools behind ``doctor`` and ``import``: they use the Zomro client only through
its public classes and never change anything at Zomro unless asked (``doctor --write-test``)."""
