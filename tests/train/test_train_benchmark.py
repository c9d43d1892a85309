"""benchmarks/train_throughput.py runs end to end on the tiny shape and reports both implementations."""
import json
import math

from benchmarks import train_throughput


def test_train_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert train_throughput.main(["--shape", "tiny", "--steps", "2", "--warmup", "1", "--seq-len", "64",
                                  "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line.split("|")[0].strip() for line in printed.splitlines() if "|" in line]
    assert rows == ["impl", "atlas-jax", "torch"]
    assert "ratio atlas-jax / torch:" in printed
    result = json.loads(out.read_text())
    for row in result["rows"]:
        assert row["tokens_per_sec"] > 0 and math.isfinite(row["loss"])
        assert abs(row["loss"] - math.log(512)) < 1.0  # random init on random tokens: about ln(vocab)


def test_train_benchmark_hf_config_shape(train_assets, tmp_path, capsys):
    """--shape takes any HF config.json; on CPU each row reports its child process's peak RSS."""
    out = tmp_path / "bench.json"
    assert train_throughput.main(["--shape", train_assets["model_config"], "--steps", "1", "--warmup", "1",
                                  "--batch", "2", "--seq-len", "32", "--lm-head", "sparse", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hidden 64, 2 layers" in printed and "ratio atlas-jax / torch: speed" in printed
    result = json.loads(out.read_text())
    assert result["lm_head"] == "sparse" and result["batch"] == 2 and result["seq_len"] == 32
    for row in result["rows"]:
        assert 0.1 < row["peak_mem_gib"] < 8  # a process's peak resident set: runtime + model + activations
    assert set(result["memory_ratios"]) == {"torch"}
