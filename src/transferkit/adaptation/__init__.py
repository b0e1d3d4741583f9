"""Domain adaptation: the losses of the adaptation methods, source-sample selection, label-free validators,
divergences between domains, and the comparison of methods (one module each)."""
