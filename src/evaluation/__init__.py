"""What a run measures: the test protocols, mistakes, hierarchy metrics, probes, FLOPs and the callbacks that run them."""
