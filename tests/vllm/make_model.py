# Copied from the project's shared material, shared/vllm-samples/scripts/make_model.py (only the
# imports were re-sorted for ruff): builds the tiny random-weight Llama the vLLM tier serves, from
# local files only (no hub download). Usage: python make_model.py OUT_DIR
"""Create a tiny random-weight Llama model + BPE tokenizer locally (no hub access)."""

import glob
import os
import sys
import sysconfig
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"
hidden = int(os.environ.get("HIDDEN", "128"))
heads = int(os.environ.get("HEADS", "4"))
kv_heads = int(os.environ.get("KV_HEADS", "2"))
layers = int(os.environ.get("LAYERS", "2"))
vocab_target = int(os.environ.get("VOCAB", "4096"))
t0 = time.time()

stdlib = sysconfig.get_paths()["stdlib"]
files = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:300]
files += sorted(glob.glob("/usr/share/common-licenses/*"))
print(f"training BPE on {len(files)} local files")

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=vocab_target,
    special_tokens=SPECIALS,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    min_frequency=2,
)
tok.train(files, trainer)
bos_id = tok.token_to_id("<|begin_of_text|>")
tok.post_processor = processors.TemplateProcessing(
    single="<|begin_of_text|> $A",
    pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
    special_tokens=[("<|begin_of_text|>", bos_id)],
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
hf_tok = PreTrainedTokenizerFast(
    tokenizer_object=tok,
    bos_token="<|begin_of_text|>",
    eos_token="<|im_end|>",
    pad_token="<|pad|>",
    unk_token=None,
    model_max_length=2048,
)
hf_tok.chat_template = CHAT_TEMPLATE
hf_tok.save_pretrained(out)
vocab = len(hf_tok)
print("vocab size", vocab)

torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=vocab,
    hidden_size=hidden,
    intermediate_size=hidden * 2,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    num_key_value_heads=kv_heads,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    bos_token_id=bos_id,
    eos_token_id=hf_tok.eos_token_id,
    pad_token_id=hf_tok.pad_token_id,
    tie_word_embeddings=True,
    torch_dtype="float32",
)
model = LlamaForCausalLM(cfg)
model.generation_config = GenerationConfig(
    bos_token_id=bos_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id
)
model.save_pretrained(out, safe_serialization=True)
n = sum(p.numel() for p in model.parameters())
print(f"params {n:,}; head_dim {hidden // heads}; saved to {out} in {time.time() - t0:.1f}s")
# sanity check
ids = hf_tok.apply_chat_template([{"role": "user", "content": "Hello there"}], add_generation_prompt=True)
print("chat template ids:", ids)
print("decoded:", repr(hf_tok.decode(ids if isinstance(ids, list) else ids["input_ids"])))
