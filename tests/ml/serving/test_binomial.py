import math

import pytest

from ml.serving.binomial import binomial_tail


@pytest.mark.parametrize("at_least", [True, False])
def test_binomial_tail_matches_exact_integer_arithmetic(at_least):
    for site_n, site_hits, rate in [(10, 9, 0.8), (20, 3, 0.95), (50, 50, 0.8), (7, 0, 0.3), (30, 12, 0.5)]:
        outcomes = range(site_hits, site_n + 1) if at_least else range(0, site_hits + 1)
        expected = sum(math.comb(site_n, k) * rate**k * (1 - rate) ** (site_n - k) for k in outcomes)
        assert binomial_tail(hits=site_hits, n=site_n, rate=rate, at_least=at_least) == \
            pytest.approx(expected, rel=1e-9)
