"""How often a model prefers the chosen answer: the share of pairs where log p(chosen | prompt) exceeds
log p(rejected | prompt), summed over the answer's tokens (the quantity DPO moves).

It is measured on held-out pairs before and after training, so a run says whether it helped, and DPO
and ORPO can be compared on the same pairs. The answer's tokens are those after the longest common
prefix of the prompt (with the generation prompt) and prompt + answer, as TRL splits them, so the
end-of-turn token counts and the chat template's own text does not.
"""

from __future__ import annotations

from helpline.platform.lazy_imports import require


def answer_logprob(model, tokenizer, prompt: list[dict], answer: list[dict]) -> tuple[float, int]:
    """Summed log-probability of ``answer``'s tokens after ``prompt``, and how many tokens that is."""
    torch = require("torch", "train")
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    device = next(model.parameters()).device
    ids = torch.tensor([full_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
    return float(logps[max(start - 1, 0) :].sum()), len(full_ids) - start


def preference_accuracy(model, tokenizer, pairs: list[dict]) -> dict:
    """The share of ``pairs`` whose chosen answer the model finds likelier than the rejected one: by summed
    log-probability (``chosen_preferred``) and by mean log-probability per token (``chosen_preferred_per_token``,
    which does not favour the shorter answer), with the mean margin of the sums."""
    was_training = model.training
    model.eval()
    summed, per_token, margins = 0, 0, []
    try:
        for pair in pairs:
            chosen, n_chosen = answer_logprob(model, tokenizer, pair["prompt"], pair["chosen"])
            rejected, n_rejected = answer_logprob(model, tokenizer, pair["prompt"], pair["rejected"])
            summed += chosen > rejected
            per_token += chosen / max(n_chosen, 1) > rejected / max(n_rejected, 1)
            margins.append(chosen - rejected)
    finally:
        model.train(was_training)
    n = max(len(pairs), 1)
    return {
        "pairs": len(pairs),
        "chosen_preferred": round(summed / n, 4),
        "chosen_preferred_per_token": round(per_token / n, 4),
        "mean_logprob_margin": round(sum(margins) / n, 4),
    }
