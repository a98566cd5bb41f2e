"""Training past one process: gradient accumulation, and data parallelism with torch.distributed.

The references are computed another way: one batch of B rows in one backward pass for
accumulation, and for two processes with half batches one process whose every batch is the two
ranks' halves side by side.  Float32 sums add in another order (a gradient summed over B rows,
or over two halves and then averaged), so the weights agree to a tolerance, not bit for bit;
after six AdamW steps the differences measured are about 5e-7 with this CPU's kernels and 1e-5
with generic ones (ATEN_CPU_CAPABILITY=default), so the tolerance is 1e-4, while other batches
move the weights apart by more than 5e-2.  Adam divides each gradient by its own running size,
which magnifies last-digit differences wherever a gradient is near zero; hence also a model
without biases: the gradient of attention's key bias is exactly zero (adding the same
number to every score of a softmax changes nothing), so in float32 it is rounding noise, which
Adam, dividing by the gradient's own size, turns into steps as large as real ones, different for
every order of summation.  The two ranks themselves end with exactly the same weights (one
all-reduce gives every rank the same averaged gradient).
"""

import dataclasses
import json
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.models.rnn import RecurrentConfig, RecurrentLM
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.training import CausalLM, TrainConfig, distributed, seed_everything
from tinylm.training.batches import random_windows

TEXT = np.array([int(c) for c in "0123456789" * 30 + "0246813579" * 30 + "9753186420" * 30], dtype=np.int64)
MODEL = TransformerConfig(vocab_size=10, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=16, dropout=0.0,
                          bias=False)
CONFIG = TrainConfig(steps=6, batch_size=8, context=16, lr=1e-2, warmup=2, eval_every=6, progress=False)
TOLERANCE = 1e-4
"""Largest difference allowed between weights trained two ways that differ only in the order of
float32 sums (measured: 5e-7 to 1e-5 after six steps, by CPU kernels)."""


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def trained(config: TrainConfig, objective=None) -> dict:
    seed_everything(0)
    model = DecoderLM(MODEL)
    tinylm.train(model, objective or CausalLM(TEXT), config)
    return model.state_dict()


def test_accumulated_micro_batches_give_the_update_of_the_whole_batch():
    whole = trained(CONFIG)
    for k in (2, 4, 8):
        accumulated = trained(dataclasses.replace(CONFIG, accumulate=k))
        assert max_difference(whole, accumulated) < TOLERANCE, k
    # the check can fail: a batch of 8 rows is not one of 2 rows
    assert max_difference(whole, trained(dataclasses.replace(CONFIG, batch_size=2))) > 100 * TOLERANCE


def test_accumulation_is_checked():
    with pytest.raises(ValueError, match="accumulate"):
        TrainConfig(batch_size=8, accumulate=3)
    with pytest.raises(ValueError, match="accumulate"):
        TrainConfig(batch_size=8, accumulate=0)
    assert TrainConfig().accumulate == 1
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell="gru", d_embed=4, d_state=8))
    with pytest.raises(ValueError, match="stateful"):
        tinylm.train(model, CausalLM(TEXT), dataclasses.replace(CONFIG, accumulate=2))


def test_alone_a_process_is_rank_zero_of_one():
    assert distributed.world() == (0, 1) and distributed.is_main()
    assert distributed.shard_seed(7, 0) == 7 and distributed.shard_seed(7, 1) == 8


class BothHalves:
    """One process's objective whose every batch is the two ranks' halves side by side: rank r
    draws batch_size / 2 windows from a generator seeded seed + r (tinylm.training.distributed)."""

    unit, monitor, higher_is_better = "bpc", "bpc", False

    def start(self, model, config):
        half = config.batch_size // 2
        generators = [torch.Generator().manual_seed(distributed.shard_seed(config.seed, r)) for r in range(2)]
        stream, length = torch.as_tensor(TEXT), config.context + 1
        self.draw = lambda: torch.cat([random_windows(stream, half, length, g, n_starts=len(stream) - length)
                                       for g in generators])

    def loss(self, model):
        rows = self.draw()
        logits, _ = model(rows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
        return loss, loss.item() / math.log(2)

    def evaluate(self, model):
        return {}


SCRIPT = """
import json, sys
import numpy as np
import torch
import tinylm
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.training import CausalLM, TrainConfig, distributed, seed_everything

text, model_config, config, out = json.load(open(sys.argv[1]))
seed_everything(0)
model = DecoderLM(TransformerConfig(**model_config))
history = tinylm.train(model, CausalLM(np.array(text)), TrainConfig(**config))   # unchanged: one process's code

rank, world = distributed.world()
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
rank0 = flat.clone()
torch.distributed.broadcast(rank0, src=0)
spread = (flat - rank0).abs().max()
torch.distributed.all_reduce(spread, op=torch.distributed.ReduceOp.MAX)
if distributed.is_main():
    torch.save(model.state_dict(), out + ".pt")
    json.dump({"world": world, "spread": spread.item(), "train_loss": history.train_loss}, open(out + ".json", "w"))
"""


def test_two_processes_with_half_batches_end_as_one_with_the_whole_batch(tmp_path):
    if not distributed.available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build of torch")
    script, spec, out = tmp_path / "train.py", tmp_path / "spec.json", tmp_path / "rank0"
    script.write_text(textwrap.dedent(SCRIPT))
    spec.write_text(json.dumps([TEXT.tolist(), MODEL.to_dict(), CONFIG.to_dict(), str(out)]))
    distributed.launch(script, nproc=2, args=(str(spec),), timeout=120)
    got = json.loads((tmp_path / "rank0.json").read_text())
    assert got["world"] == 2
    assert got["spread"] == 0.0, "the ranks must end with exactly the same weights"
    two = torch.load(tmp_path / "rank0.pt")
    one = trained(CONFIG, BothHalves())
    assert max_difference(one, two) < TOLERANCE
    assert max_difference(trained(CONFIG), two) > 100 * TOLERANCE, "other rows give other weights: the check can fail"


def test_launch_kills_a_run_that_hangs(tmp_path):
    if not distributed.available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build of torch")
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(TimeoutError, match="killed"):
        distributed.launch(script, nproc=2, timeout=5)
    with pytest.raises(FileNotFoundError):
        distributed.launch(tmp_path / "missing.py")
