import string

import torch

from spot_utils.config import ModelConfig
from spot_utils.modeling import count_parameters, load_model, save_model
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model


def test_tokenizer_round_trip_every_character():
    tok = build_char_tokenizer()
    text = string.printable.replace("\t", "").replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    for s in [text, "37+45=82\n82-18=64\nAnswer: 64", "  spaces  kept  ", "X..O...\nyou: X"]:
        ids = tok.encode(s, add_special_tokens=False)
        assert len(ids) == len(s)  # one token per character
        assert tok.decode(ids) == s


def test_chat_template_and_special_tokens():
    tok = build_char_tokenizer()
    msgs = [{"role": "user", "content": "Reverse: abc"}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>Reverse: abc<|end|><|assistant|>"
    ids = tok.encode(prompt, add_special_tokens=False)
    assert len(ids) == len("Reverse: abc") + 3
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "cba"}], tokenize=False)
    assert full.endswith("<|assistant|>cba<|end|>")
    assert tok.decode(tok.encode(full, add_special_tokens=False), skip_special_tokens=True) == "Reverse: abccba"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>" and tok.padding_side == "left"


def test_model_size_and_save_load_round_trip(tmp_path):
    from spot_utils.config import load_profile

    tok = build_char_tokenizer()
    model = build_tiny_model(load_profile("tiny").model, tok)
    assert 0.7e6 < count_parameters(model) < 1.5e6  # "about 1M parameters"
    save_model(model, tok, tmp_path / "m")
    model2, tok2 = load_model(tmp_path / "m")
    assert type(model2).__name__ == "Qwen3ForCausalLM"
    assert tok2.encode("Answer: 5", add_special_tokens=False) == tok.encode("Answer: 5", add_special_tokens=False)
    assert tok2.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False, add_generation_prompt=True) \
        == "<|user|>q<|end|><|assistant|>"
    x = torch.tensor([tok.encode("12+3=15", add_special_tokens=False)])
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, model2(x).logits)


def test_attention_kernel_choice(tmp_path):
    import importlib.util

    import pytest

    from spot_utils.modeling import attention_implementation

    flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    assert attention_implementation("auto", "cpu") == "sdpa"  # FlashAttention-2 needs a GPU
    assert attention_implementation("eager") == "eager"
    if not flash:  # a FlashAttention-2 request that cannot run fails up front, naming the setting
        with pytest.raises(RuntimeError, match="model.attn_implementation is flash_attention_2"):
            attention_implementation("flash_attention_2", "cpu")
    tok = build_char_tokenizer()
    save_model(build_tiny_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                            intermediate_size=64), tok), tok, tmp_path)
    for asked, ran in (("auto", "sdpa"), ("eager", "eager")):
        model, _ = load_model(tmp_path, attn_implementation=asked)
        assert model.config._attn_implementation == ran  # which kernel ran: what notebook 00 prints



def test_generation_and_evaluation_do_not_import_the_miniature():
    """No import circle: tiny.pretrain uses evaluation (its probe), evaluation uses generation, and neither
    of those needs the miniature (prompt_text lives in modeling; graders come from the profile's tasks)."""
    import subprocess
    import sys

    code = "import sys, spot_utils.evaluation; print(any(m.startswith('spot_utils.tiny') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
