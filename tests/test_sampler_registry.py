"""The samplers' method registry: a method registered from this file alone runs
through sample(), gaussian_error and the diffusers scheduler; the properties every
consumer reads come from the records; no method name is compared outside them."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from problems import check_exact_error_by_monte_carlo, gaussian_case

import nonrev
from nonrev.samplers import (
    METHODS,
    Method,
    gaussian_error,
    get_method,
    method_names,
    register,
    sample,
    unregister,
)
from nonrev.samplers.update import affine_step, finish
from nonrev.scores import GaussianMixtureScore


def _build_exp_euler(ker, options):
    """Exponential Euler on the probability flow ``dx/dtau = A x + score`` with the
    score frozen over the step: ``x_s = M_h^{-1} x + A^{-1} (M_h^{-1} - I) score``
    (``M_h^{-1} = e^{h A}`` commutes with ``A``); the x0 form through
    ``score = -Sigma_t^{-1} (x - M_t x0)``. Built from the kernel's blocks only."""
    Mh_inv = np.linalg.inv(ker.Mh)
    G = np.linalg.solve(ker.A, Mh_inv - np.eye(ker.A.shape[-1]))
    GS = G @ ker.Sinv[:-1]
    return finish(ker, X=Mh_inv - GS, X0=GS @ ker.M[:-1], F=Mh_inv, G=G)


@pytest.fixture
def exp_euler():
    method = register(
        Method(
            "exp_euler_test",
            build=_build_exp_euler,
            step=affine_step,
            output="score",
            summary="exponential Euler, frozen score",
        )
    )
    yield method
    unregister(method.name)


def test_a_method_registered_here_runs_through_sample_and_the_exact_error(exp_euler):
    proc, m, C = gaussian_case(np.random.default_rng(0))
    errs = [
        gaussian_error(proc, m, C, "exp_euler_test", steps=n, T=6.0, t_min=1e-2)["w2"]
        for n in (20, 80)
    ]
    assert errs[1] < errs[0] / 2.5  # first order: 4x the steps, ~4x less error
    # the exact law of its output is what sample() produces (5 standard errors)
    check_exact_error_by_monte_carlo(
        proc, m, C, "exp_euler_test", n=20_000, T=6.0, steps=30, t_min=1e-2, spacing="log"
    )
    assert "exp_euler_test" in method_names(output="score", explicit=False)


def test_a_method_registered_here_runs_in_the_diffusers_scheduler(exp_euler):
    pytest.importorskip("diffusers")
    from nonrev.integrations.diffusers import NonReversibleScheduler

    proc, m, C = gaussian_case(np.random.default_rng(1))
    sch = NonReversibleScheduler(
        U=proc.U,
        Q=proc.Q,
        num_train_timesteps=400,
        method="exp_euler_test",
        prediction_type="sample",
        timestep_spacing="trailing",
    )
    sch.set_timesteps(40)
    grid = np.concatenate([[0.0], sch.train_times[sch.timesteps.numpy()[::-1]]])
    exact = gaussian_error(proc, m, C, "exp_euler_test", times=grid, start="stationary")
    # x0 prediction of N(m, C) at time t: m + C M^T Gamma^{-1} (x - M m)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    x = sch.sample_prior((n, 4), generator=gen, dtype=torch.float64)
    for k in sch.timesteps:
        t = float(sch.train_times[int(k)])
        M, S = proc.mean_and_cov(t)
        W = C @ M.T @ np.linalg.inv(M @ C @ M.T + S)
        x0 = torch.as_tensor(m) + (x - torch.as_tensor(M @ m)) @ torch.as_tensor(W).T
        x = sch.step(x0, k, x).prev_sample
    x = x.numpy()
    se = np.sqrt(np.diag(exact["cov"]) / n)
    assert np.all(np.abs(x.mean(0) - exact["mean"]) < 5 * se)
    assert np.allclose(
        np.cov(x.T), exact["cov"], atol=5 * np.sqrt(2 / n) * np.abs(exact["cov"]).max()
    )


def test_registry_refuses_duplicates_and_names_what_it_knows():
    with pytest.raises(ValueError, match="already registered"):
        register(get_method("gddim"))
    with pytest.raises(ValueError, match="method must be one of .*gddim"):
        get_method("rk4")
    with pytest.raises(ValueError, match="unknown method properties"):
        method_names(colour="red")
    with pytest.raises(ValueError, match="output must be one of"):
        Method("x", build=None, step=None, output="eps")
    assert method_names(stochastic=True) == ("euler_maruyama", "ancestral")
    assert set(method_names(prior=True)) == {"gddim", "dpmpp_2m"}
    assert get_method("heun").evaluations == 2 and get_method("dpmpp_2m").multistep


def test_a_score_object_with_only_a_score_drives_every_method():
    proc, m, C = gaussian_case(np.random.default_rng(2))
    score = GaussianMixtureScore(proc, m[None], C[None])

    def plain(x, t):
        return score(x, t)

    for name in METHODS:
        if get_method(name).explicit:
            continue  # their stability guard wants more steps than this
        gen = torch.Generator().manual_seed(0)
        x, info = sample(
            plain,
            proc,
            8,
            steps=10,
            method=name,
            T=4.0,
            t_min=1e-2,
            spacing="log",
            generator=gen,
            dtype=torch.float64,
        )
        assert torch.isfinite(x).all() and info["nfe"] == 10 * get_method(name).evaluations


def test_no_method_name_is_compared_outside_the_registry():
    """The method's properties live in its record: outside the family files no code
    compares a method's name (``== "gddim"``, ``in ("ancestral", ...)``, a config's
    ``choices=(...)``); defaults such as a study's list of methods are fine."""
    src = Path(nonrev.__file__).parent
    allowed = {
        src / "samplers" / f
        for f in ("registry.py", "explicit.py", "affine.py", "dpmpp.py", "prior.py", "update.py")
    }
    names = "|".join(map(re.escape, METHODS))
    bad = []
    for f in src.rglob("*.py"):
        if f in allowed:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare):
                consts = [
                    c
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant)
                    and isinstance(c.value, str)
                    and re.fullmatch(names, c.value)
                ]
                if consts:
                    bad.append(f"{f.relative_to(src)}:{node.lineno}")
            if isinstance(node, ast.keyword) and node.arg == "choices":  # validation
                consts = [
                    c
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant)
                    and isinstance(c.value, str)
                    and re.fullmatch(names, c.value)
                ]
                if consts:
                    bad.append(f"{f.relative_to(src)}:{node.value.lineno} (choices)")
    assert not bad, "\n".join(bad)
