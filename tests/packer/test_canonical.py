import json
import random

import pytest

from packer.manifest import canonical_json


def _random_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([None, True, False, 0, -5, 2**70, 1.5, 1e-7, 3.0, 1e22, "",
                           "a\"b\\c\n\t\u00e9\u2028\U0001F600\x00\x1f", "plain"])
    if r < 0.65:
        return {rng.choice(["a", "b", "é", "Z", "a b", "\u2028"]) + str(rng.randint(0, 9)): _random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def test_matches_json_dumps_byte_for_byte():
    rng = random.Random(7)
    for _ in range(2000):
        value = _random_value(rng)
        assert canonical_json(value) == (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
                                         + "\n").encode()


@pytest.mark.parametrize("bad", [float("nan"), {1: "x"}, {"a": object()}])
def test_rejects_what_has_no_canonical_form(bad):
    with pytest.raises((TypeError, ValueError)):
        canonical_json(bad)
