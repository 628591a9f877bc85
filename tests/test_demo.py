"""The NTT behind the demo is right, and the demo runs."""
import numpy as np
import pytest

from zkalloc_np import ntt
from zkalloc_np.cli.main import main


@pytest.mark.parametrize("n", [2, 8, 32])
def test_forward_matches_the_definition(n):
    t = ntt.NTT(n)
    a = ntt.random_field_elements(n, seed=n)
    w = pow(ntt.GENERATOR, (ntt.P - 1) // n, ntt.P)
    expected = [sum(int(c) * pow(w, i * j, ntt.P) for j, c in enumerate(a)) % ntt.P for i in range(n)]
    assert t.forward(a).tolist() == expected


@pytest.mark.parametrize("log_n", [4, 10, 16])
def test_round_trip(log_n):
    t = ntt.NTT(1 << log_n)
    a = ntt.random_field_elements(1 << log_n)
    assert np.array_equal(t.inverse(t.forward(a)), a)


def test_product_matches_convolution():
    t = ntt.NTT(64)
    a, b = ntt.random_field_elements(64, 1), ntt.random_field_elements(64, 2)
    assert np.array_equal(ntt.multiply_polynomials(t, a, b), ntt.naive_cyclic_product(a, b))


@pytest.mark.parametrize("n", [0, 3, 2**28])
def test_bad_sizes(n):
    with pytest.raises(ValueError):
        ntt.NTT(n)


def test_demo_command_runs(capsys):
    assert main(["demo", "--log-sizes", "10,12", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "2^10" in out and "2^12" in out and "speedup" in out and "hit rate" in out


def test_demo_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--log-sizes", "ten"])
    assert "log2 sizes" in capsys.readouterr().err


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "transparent huge pages" in out and "cache_bytes" in out


def test_help_lists_each_command_once(capsys):
    import re
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "info", "run", "compare"):
        listed = re.findall(rf"^ +{command} {{2,}}\S", out, re.M)
        assert len(listed) == 1, f"{command} listed {len(listed)} times:\n{out}"


def test_the_demo_refuses_a_process_wide_install(capsys):
    import zkalloc_np as zk
    from zkalloc_np.cli import demo
    zk.install()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["demo", "--log-sizes", "10", "--rounds", "1"])
        assert exit_.value.code == 2
        with pytest.raises(RuntimeError, match="installed process-wide"):
            demo.measure(10, 1)
    finally:
        zk.uninstall()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "installed process-wide" in err
