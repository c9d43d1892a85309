"""The common-prefix length the token reuse splits at, against os.path.commonprefix."""
import os
import random

from atlas_jax.data.shared_tokens import common_prefix_len


def test_common_prefix_len_equals_os_path_commonprefix():
    rng = random.Random(0)
    cases = [("", ""), ("abc", ""), ("abc", "abc"), ("abc", "abd"), ("<|im_start|>✓x", "<|im_start|>✓y")]
    cases += [("".join(rng.choice("ab✓") for _ in range(rng.randint(0, 40))),
               "".join(rng.choice("ab✓") for _ in range(rng.randint(0, 40)))) for _ in range(3000)]
    cases += [(a, a + b) for a, b in cases[:500]]  # one a prefix of the other
    for a, b in cases:
        assert common_prefix_len(a, b) == len(os.path.commonprefix([a, b])), (a, b)
