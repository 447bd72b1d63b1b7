"""Two CPU processes (gloo) with gathered alignment features == one process over the global batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import NER_LABELS, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(processor, words, labels, contexts):
    return processor(words=words, contexts=contexts, word_labels=labels,
                     label2id={label: i for i, label in enumerate(NER_LABELS)},
                     pos_tags=[["X"] * len(w) for w in words])


WORDS = [["Kevin", "Durant", "scores"], ["Paris", "floods", "again", "today"], ["Go", "Bears"], ["Apple", "sues"]]
LABELS = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "O", "O"], ["O", "B-ORG"], ["B-ORG", "O"]]
CONTEXTS = ["A player.", "Water in streets.", "", "A logo on a wall."]


def _worker(rank, world, port, state, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from transformers import AutoTokenizer, ConvNextImageProcessorPil

    from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor
    from tests.helpers import MINILM_PATH

    processor = ShapCAProcessor(ConvNextImageProcessorPil(size={"shortest_edge": 32}), AutoTokenizer.from_pretrained(MINILM_PATH))
    torch.manual_seed(0)
    model = ShapCAForTokenClassification(tiny_config(gather_alignment_features=True, dropout=0.0))
    model.load_state_dict(state)
    model.eval()  # no dropout; the losses are still computed because labels are given
    half = len(WORDS) // world
    sl = slice(rank * half, (rank + 1) * half)
    out = model(**_batch(processor, WORDS[sl], LABELS[sl], CONTEXTS[sl]))
    out.loss.backward()
    for p in model.parameters():  # what DDP does: average the gradients
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
    losses = torch.stack([out.loss.detach(), out.main_loss.detach(), out.semantic_loss.detach()])
    dist.all_reduce(losses)
    if rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": losses / world, "grads": grads}, os.path.join(out_dir, "dist.pt"))
    dist.destroy_process_group()


def test_two_process_gather_matches_one_process(processor, tmp_path):
    torch.manual_seed(0)
    from modeling_shapca import ShapCAForTokenClassification

    model = ShapCAForTokenClassification(tiny_config(gather_alignment_features=True, dropout=0.0)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mp.spawn(_worker, args=(2, _free_port(), state, str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "dist.pt")

    torch.manual_seed(0)  # same initial seed -> same Shapley permutations
    single = ShapCAForTokenClassification(tiny_config(gather_alignment_features=True, dropout=0.0)).eval()
    single.load_state_dict(state)
    out = single(**_batch(processor, WORDS, LABELS, CONTEXTS))
    out.loss.backward()
    expected = torch.stack([out.loss, out.main_loss, out.semantic_loss]).detach()
    assert torch.allclose(result["losses"], expected, atol=1e-5), (result["losses"], expected)
    for name, param in single.named_parameters():
        if param.grad is not None and name in result["grads"]:
            assert torch.allclose(result["grads"][name], param.grad, atol=1e-5), name
