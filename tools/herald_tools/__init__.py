"""Herald's tools: the ``herald`` command line (``cli``), the demo, the local webhook
receiver, the throwaway databases they use, and the benchmarks with the peer comparisons
(``bench``). The top of the house: it may import every other package.
"""
