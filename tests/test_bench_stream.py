"""bench.stream runs at a tiny size: it writes its 500 × 375 JPEGs and prints its three ratios, consistent with its
images/s figures."""
import pytest
import torch
from torchvision.io import decode_jpeg, read_file

from test_bench import run_bench


def test_stream_bench_writes_its_jpegs_and_prints_three_ratios(monkeypatch, capsys, tmp_path):
    from bench import stream

    out = run_bench(stream, ["--images", "64", "--batch", "16", "--rounds", "1", "--train-steps", "1",
                             "--train-batch", "2", "--threads", "1", "--dir", str(tmp_path)], monkeypatch, capsys)
    files = sorted(tmp_path.glob("train/*/*.jpg"))
    assert len(files) == 64 and decode_jpeg(read_file(str(files[0]))).shape == (3, 375, 500)
    rate = out["images_per_s"]
    assert out["vs_imagefolder"]["ratio"] == pytest.approx(rate["streaming"] / rate["imagefolder"], rel=0.01)
    assert out["vs_decode_only"]["ratio"] == pytest.approx(rate["streaming"] / rate["decode_only"], rel=0.01)
    assert out["train_fed"]["ratio"] == pytest.approx(rate["train_fed"] / rate["train_in_memory"], rel=0.01)
    # rel 0.1: at this tiny size both rates can be a few images/s, printed to 0.1
    assert out["vs_full_decode"]["ratio"] == pytest.approx(rate["streaming"] / rate["streaming_full_decode"], rel=0.1)
    assert out["workers"] == 2 and out["cpu_model"] and out["decode"] == "reduced" and len(out["load_average"]) == 2
    transfer = out["batch_transfer"]  # a batch of 16 images of 224 px: 2.4 MB as uint8, 4 times that as float32
    assert transfer["uint8"]["mb_per_batch"] == 2.4 and transfer["float32"]["mb_per_batch"] == 9.6
    assert isinstance(out["gpu"], dict) == torch.cuda.is_available()
