"""Hugging Face transformers models through sparsify_, save_compressed / load_compressed, and the LLM pruning
criteria on a tiny Llama (models built from configs: nothing is downloaded)."""

import copy

import pytest
import torch
import transformers  # a test extra (run.sh installs it): these tests run, never skip

import sparsekern as sk


def tiny_llama(seed=0, init=0.02):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True, initializer_range=init)
    return transformers.LlamaForCausalLM(cfg).eval()


def not_head(name, module):
    return "lm_head" not in name


@pytest.mark.parametrize("fmt", ["csr", "2:4"])
def test_llama_sparsify_logits_and_generate(fmt):
    model = tiny_llama()
    sk.pruning.prune(model, 0.6 if fmt == "csr" else None, granularity="element" if fmt == "csr" else "2:4",
                     filter_fn=not_head)
    sk.pruning.remove(model)
    dense = copy.deepcopy(model)
    sk.sparsify_(model, format=fmt, filter_fn=not_head)
    layer = model.model.layers[0]
    assert isinstance(layer.mlp.down_proj, sk.SparseLinear) and layer.mlp.down_proj.format == fmt
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: stays dense and tied
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    ids = torch.randint(0, 96, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, dense(ids).logits, rtol=1e-4, atol=1e-4)
    prompt = ids[:1, :4]
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(prompt, **kw), dense.generate(prompt, **kw))


def test_bert_and_resnet_sparsify():
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=64)).eval()
    sk.pruning.prune(bert, 0.7)
    sk.pruning.remove(bert)
    ref = copy.deepcopy(bert)
    sk.sparsify_(bert, format="csr")
    assert isinstance(bert.encoder.layer[0].intermediate.dense, sk.SparseLinear)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(bert(ids).last_hidden_state, ref(ids).last_hidden_state, rtol=1e-4, atol=1e-4)

    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5)
    net = transformers.ResNetForImageClassification(cfg).eval()
    sk.pruning.prune(net, 0.6)
    sk.pruning.remove(net)
    ref = copy.deepcopy(net)
    sk.sparsify_(net, format="csr")
    assert any(isinstance(m, sk.SparseConv2d) for m in net.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x).logits, ref(x).logits, rtol=1e-4, atol=1e-4)


def test_llama_save_load_compressed_meta_init(tmp_path):
    model = tiny_llama()
    sk.pruning.prune(model, None, granularity="2:4", filter_fn=not_head)
    sk.pruning.remove(model)
    sk.sparsify_(model, format="2:4", filter_fn=not_head)
    sk.save_compressed(model, str(tmp_path))
    fresh = sk.interop.hf.from_compressed(str(tmp_path))  # built on the meta device, then loaded
    assert isinstance(fresh, transformers.LlamaForCausalLM)
    assert fresh.model.layers[1].self_attn.q_proj.format == "2:4"
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    ids = torch.randint(0, 96, (1, 6))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(fresh.generate(ids, **kw), model.generate(ids, **kw))


def _perplexity(model, seqs):
    with torch.no_grad():
        return float(torch.exp(model(seqs, labels=seqs).loss))


@pytest.fixture(scope="module")
def sampled():
    """A random Llama with a wide init, so its distributions are peaked (perplexity ~21 of 96 tokens), and 48
    sequences sampled from it."""
    dense = tiny_llama(seed=1, init=0.3)
    torch.manual_seed(2)
    with torch.no_grad():
        text = dense.generate(torch.randint(0, 96, (48, 1)), max_new_tokens=31, do_sample=True, top_k=0,
                              pad_token_id=0)
    return dense, text


@pytest.mark.parametrize("granularity", ["element", "2:4"])
def test_sparsegpt_and_wanda_beat_magnitude_on_tiny_llama(granularity, sampled):
    """Calibration (32 sequences) and held-out text (16) are sampled from the dense model; the pruned models'
    perplexity on held-out text is lower with SparseGPT (and Wanda) than with magnitude at the same sparsity."""
    dense, text = sampled
    calib, held_out = [text[:32]], text[32:]
    sparsity = 0.6 if granularity == "element" else None
    ppl = {}
    for criterion in ("magnitude", "wanda", "sparsegpt"):
        model = copy.deepcopy(dense)
        sk.pruning.prune(model, sparsity, granularity=granularity, criterion=criterion, filter_fn=not_head,
                         data=calib)
        sk.pruning.remove(model)
        assert sk.pruning.model_sparsity(model, not_head) >= (0.6 if sparsity else 0.5) - 1e-6
        ppl[criterion] = _perplexity(model, held_out)
    assert ppl["sparsegpt"] < ppl["magnitude"], ppl
    assert ppl["wanda"] < ppl["magnitude"], ppl

