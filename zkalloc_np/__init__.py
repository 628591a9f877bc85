from zkalloc_np import _core
