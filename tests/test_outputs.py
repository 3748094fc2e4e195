import pytest

from nonrev.outputs import OutputError, atomic_dir


def test_atomic_dir_success_failure_and_overwrite(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # old run untouched
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no leftovers


def test_atomic_file_and_partials(tmp_path):
    from nonrev.outputs import atomic_file, remove_partials

    target = tmp_path / "x.json"
    with atomic_file(target) as tmp:
        assert tmp.suffix == ".json" and tmp.name.startswith(".")
        tmp.write_text("{}")
    assert target.read_text() == "{}"
    with pytest.raises(ValueError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert target.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    (tmp_path / ".x.abc.partial.json").write_text("left by SIGKILL")
    assert remove_partials(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
