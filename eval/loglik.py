"""Log-likelihood scoring of (context, continuation) token requests, as lm-evaluation-harness does it.

A request is (context_ids, continuation_ids); its score is the sum of log p(continuation | context) under the model
and whether greedy decoding would produce the continuation. Batched (longest first), right-padded, one forward each.
"""

import torch
from tqdm.auto import tqdm


def encode_pair(tokenizer, context: str, continuation: str, prefix_id: int) -> tuple[list[int], list[int]]:
    """Harness tokenisation: trailing spaces of the context move to the continuation; the continuation is what the
    tokenizer gives for context + continuation beyond the context's own tokens. Empty context -> [prefix_id]."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"] if stripped else []
    return (ctx or [prefix_id]), whole[len(ctx):]


def rolling_requests(token_ids: list[int], prefix_id: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint windows covering every token once, each predicting up to `max_length - 1` tokens from one token of
    context (the previous window's last token, or `prefix_id` first), as the harness's rolling windows."""
    ids, step, out = [prefix_id] + list(token_ids), max_length - 1, []
    for start in range(0, len(token_ids), step):
        out.append((ids[start : start + 1], ids[start + 1 : start + 1 + step]))
    return out


@torch.no_grad()
def score_requests(model, requests, batch_size: int = 16, max_length: int = 512, pad_id: int = 0, desc: str = "loglik",
                   vocab_limit: int | None = None):
    """[(sum log-prob, greedy match)] per request, in input order. Over-long requests lose context tokens from the
    left (never continuation tokens); a continuation alone longer than `max_length` raises ValueError.
    `vocab_limit`: normalise over the first `vocab_limit` ids only (e.g. an MDU model's text vocabulary)."""
    device = next(model.parameters()).device
    for i, (ctx, cont) in enumerate(requests):
        if not cont:
            raise ValueError(f"request {i}: empty continuation")
        if len(cont) >= max_length:
            raise ValueError(f"request {i}: continuation of {len(cont)} tokens does not fit max_length={max_length}")
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
    results = [None] * len(requests)
    for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[b : b + batch_size]
        seqs = [(requests[i][0] + requests[i][1])[-max_length:] for i in idx]
        inputs = [s[:-1] for s in seqs]
        width = max(len(s) for s in inputs)
        input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in inputs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in inputs], device=device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        for row, i in enumerate(idx):
            cont = requests[i][1]
            end = len(inputs[row])
            logp = logits[row, end - len(cont) : end, :vocab_limit].float().log_softmax(-1)
            target = torch.tensor(cont, device=device)
            total = logp.gather(-1, target[:, None]).sum().item()
            results[i] = (total, bool((logp.argmax(-1) == target).all()))
    return results
