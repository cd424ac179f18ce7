"""A large long-lived cache is frozen out of the cyclic collector's walks; a small one is not."""

import gc

from runtime.heap import LARGE, freeze_long_lived


def test_a_large_cache_freezes_the_heap_and_a_small_one_does_not():
    gc.unfreeze()
    try:
        cache = [{"job": i} for i in range(LARGE)]
        assert not freeze_long_lived(LARGE - 1) and gc.get_freeze_count() == 0
        assert freeze_long_lived(len(cache)) and gc.get_freeze_count() >= len(cache)
    finally:
        gc.unfreeze()
