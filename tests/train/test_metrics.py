"""RunLogger: JSONL records, TensorBoard scalars, progress bar postfix, loss plot, resume truncation, non-main silence."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from lmjax.train.metrics import RunLogger, mfu, plot_losses, read_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tb_events(logdir):
    """Every event in the TFRecord event files under `logdir`, oldest file first."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):  # record: u64 length, u32 crc, payload, u32 crc
            (n,) = struct.unpack("<Q", data[i:i + 8])
            events.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
            i += 16 + n
    return events


def tb_scalars(logdir):
    return {(v.tag, e.step): v.simple_value for e in tb_events(logdir) for v in e.summary.value}


def run(workdir, steps, *, initial_step=0, **kw):
    log = RunLogger(workdir, total_steps=10, initial_step=initial_step, **kw)
    for step in steps:
        log.advance()
        log.log(step, {"loss": 4.0 / step, "tokens_per_s": 12345.6, "mfu": 0.4123})
        if step % 5 == 0:
            log.log(step, {"eval_loss": 5.0 / step}, split="eval")
    return log


def test_jsonl_tensorboard_bar_and_plot(tmp_path, capsys):
    png = run(tmp_path, range(1, 11)).close()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(records) == 12
    assert records[0] == {"step": 1, "split": "train", "loss": 4.0, "tokens_per_s": 12345.6, "mfu": 0.4123}
    assert records[5] == {"step": 5, "split": "eval", "eval_loss": 1.0}
    scalars = tb_scalars(tmp_path / "tb")
    assert scalars[("train/loss", 4)] == 1.0 and scalars[("eval/eval_loss", 10)] == 0.5
    assert pytest.approx(scalars[("train/mfu", 10)]) == 0.4123
    err = capsys.readouterr().err
    assert "10/10" in err and "loss 0.4000 | eval 0.5000 | 12,346 tok/s | MFU 41.2%" in err
    assert png == tmp_path / "loss.png"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_resume_drops_records_after_the_checkpoint(tmp_path):
    run(tmp_path, range(1, 10), progress=False).close(plot=False)  # killed after logging step 9, checkpoint at 6
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "spl')  # cut short mid-write
    log = run(tmp_path, [7, 8], initial_step=6, progress=False)
    assert log.close(plot=False) is None
    steps = [(r["step"], r["split"]) for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == [(1, "train"), (2, "train"), (3, "train"), (4, "train"), (5, "train"), (5, "eval"),
                     (6, "train"), (7, "train"), (8, "train")]
    purges = [e.step for e in tb_events(tmp_path / "tb") if e.session_log.status == e.session_log.START]
    assert purges[-1] == 7  # TensorBoard hides the first run's events from step 7 on


def test_non_main_process_writes_nothing(tmp_path, capsys):
    log = run(tmp_path / "run", range(1, 4), is_main=False)
    log.write("hello")
    assert log.close() is None
    assert not (tmp_path / "run").exists()
    assert capsys.readouterr() == ("", "")


def test_write_prints_a_line(tmp_path, capsys):
    log = RunLogger(tmp_path, total_steps=3, tensorboard=False)
    log.write("resumed from step 2")
    log.close()
    assert capsys.readouterr().out == "resumed from step 2\n"
    assert not (tmp_path / "tb").exists()


def test_plot_losses_log_y_and_empty(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"step": s, "split": "eval", "eval_loss": 1 / s}) + "\n" for s in (1, 2, 3)))
    out = plot_losses(path, tmp_path / "plots" / "eval.png", title="eval only", log_y=True)
    assert out.read_bytes().startswith(PNG_MAGIC)
    path.write_text(json.dumps({"step": 1, "split": "train", "lr": 0.1}) + "\n")
    with pytest.raises(ValueError, match="no loss records"):
        plot_losses(path, tmp_path / "none.png")
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2 is not JSON"):
        read_jsonl(path)


def test_import_is_cheap():
    code = "import sys, lmjax.train.metrics; print(sorted({'matplotlib', 'tensorboardX'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mfu_math():
    # 6 MFLOP/token at 1000 tokens/s = 6 GFLOP/s, against 10 GFLOP/s per device.
    assert mfu(6e6, 1000, 1e10) == pytest.approx(0.6)
    assert mfu(6e6, 1000, 1e10, n_devices=4) == pytest.approx(0.15)
    assert mfu(0.0, 1000, 1e10) == 0.0
    assert mfu(6e6, 1e6, 1e10) == 1.0  # clipped
    with pytest.raises(ValueError):
        mfu(6e6, 1000, 0.0)
    with pytest.raises(ValueError):
        mfu(-1.0, 1000, 1e10)
