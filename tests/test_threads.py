"""nonrev's entry points run numpy's and torch's pools with one thread each (by
default) and give the caller's settings back (nonrev.threads; issue 23)."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import nonrev
from nonrev import threads


def _blas_threads():
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    with threadpool_limits(limits=2):
        yield
    torch.set_num_threads(before)


def test_limited_scopes_both_pools_and_restores(two_threads):
    assert torch.get_num_threads() == 2 and _blas_threads() == [2]
    with threads.limited():
        assert torch.get_num_threads() == 1 and _blas_threads() == [1]
        with threads.limited(3):  # nested: the outer limit stays
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2 and _blas_threads() == [2]


def test_sample_restores_the_callers_threads(two_threads):
    seen = []
    proc = nonrev.OUProcess(np.eye(2))
    nonrev.sample(
        lambda x, t: -x,
        proc,
        n=4,
        steps=3,
        method="euler_maruyama",
        callback=lambda i, t, x: seen.append(torch.get_num_threads()),
    )
    assert seen == [1] * 4
    assert torch.get_num_threads() == 2 and _blas_threads() == [2]


def test_settings_and_environment(monkeypatch, two_threads):
    monkeypatch.setattr(threads, "_setting", threads._UNSET)
    monkeypatch.setenv("NONREV_THREADS", "none")
    assert threads.get_threads() is None
    with threads.limited():  # left alone
        assert torch.get_num_threads() == 2
    monkeypatch.setenv("NONREV_THREADS", "2")
    assert threads.get_threads() == 2
    monkeypatch.setenv("NONREV_THREADS", "lots")
    with pytest.raises(ValueError, match="NONREV_THREADS"):
        threads.get_threads()
    threads.set_threads(1)
    assert threads.get_threads() == 1
    for bad in (0, -1, 1.5, True, "x"):
        with pytest.raises(ValueError, match="threads"):
            threads.set_threads(bad)
