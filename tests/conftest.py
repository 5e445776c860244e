import os

import pytest
import torch

# Triton kernels run on the CPU under the interpreter when no GPU exists; it must be set before any kernel is
# defined, i.e. before a sparsekern._triton module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Hypothesis profiles of the property tests (tests/test_properties.py): "ci" (few examples, derandomised so a
# failure reproduces; keeps the suite in CI's time budget) and "dev" (more, random examples). "ci" is the default,
# CI=true or not, because .ci/run does not set CI; HYPOTHESIS_PROFILE=dev runs the longer search.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # only the property tests need it (run.sh installs it)
    pass
else:
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=12, derandomize=True, print_blob=True, **_common)
    settings.register_profile("dev", max_examples=150, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")


def tol(dtype, k: int = 1):
    """(rtol, atol) against a float64 reference, for a sum of k products accumulated in fp32."""
    if dtype == torch.float32:
        return 1e-5, 1e-5 * max(1.0, k**0.5)
    if dtype == torch.float16:
        return 1e-2, 1e-2 * max(1.0, k**0.5)
    return 2e-2, 2e-2 * max(1.0, k**0.5)  # bfloat16: 8 mantissa bits on the output


def assert_close(actual, expected64, dtype, k=1):
    """Compares a low-precision result against a float64 reference computed from the same (rounded) inputs."""
    rtol, atol = tol(dtype, k)
    torch.testing.assert_close(actual.double(), expected64, rtol=rtol, atol=atol)


def random_sparse(M, K, sparsity, dtype=torch.float32, device="cpu", generator=None):
    """A dense (M, K) matrix with round(sparsity * M * K) zeros at random places."""
    W = torch.randn(M, K, generator=generator).to(dtype)
    n_zero = round(sparsity * M * K)
    if n_zero:
        idx = torch.randperm(M * K, generator=generator)[:n_zero]
        W.view(-1)[idx] = 0
    return W.to(device)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_compile_matches_eager(mm, A, in_features: int, out_features: int, grad_values: bool = False):
    """torch.compile(fullgraph=True, backend="aot_eager") over `mm(A, B)` and `sk.ops.sparse_linear(x, A, bias)`
    gives eager's forward result and eager's gradient w.r.t. x (and A.values with `grad_values`)."""
    import sparsekern as sk

    B = torch.randn(in_features, 8, dtype=A.dtype)
    x = torch.randn(3, 4, in_features, dtype=A.dtype)
    bias = torch.randn(out_features, dtype=A.dtype)

    def f(A, B, x, bias):
        return mm(A, B).relu().sum() + sk.ops.sparse_linear(x, A, bias).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(A, B, x, bias), f(A, B, x, bias))
    leaves = [x.requires_grad_(True)] + ([A.values.requires_grad_(True)] if grad_values else [])
    compiled(A, B, x, bias).backward()
    grads = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    f(A, B, x, bias).backward()
    for g, t in zip(grads, leaves):
        torch.testing.assert_close(g, t.grad)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def poison_cuda():
    """Fills the caching allocator's free memory with NaN, so a kernel that leaves outputs unwritten fails."""
    free = torch.cuda.mem_get_info()[0]
    block = torch.full((min(free // 8, 1 << 28),), float("nan"), device="cuda")
    del block
    yield


def randomise_bn(model):
    """Random BatchNorm affine parameters and running statistics (a fresh BatchNorm is the identity), in eval
    mode; returns the model."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data = torch.randn(m.num_features)
            m.bias.data = torch.randn(m.num_features)
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def _interpreter_problem() -> str | None:
    """Why this Triton's interpreter cannot run our kernels here, else None. Up to Triton 3.6 the interpreter
    turns a loaded scalar used as a loop bound into an int with int() of a 1-element array, which NumPy 2.4
    rejects (compiled kernels are unaffected)."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            int(np.ones(1))
            return None
        except TypeError:
            pass
    import triton
    import triton.language as tl

    @triton.jit
    def loop_to_loaded_bound(x_ptr):
        for i in range(0, tl.load(x_ptr)):
            tl.store(x_ptr + 1, i)

    try:
        loop_to_loaded_bound[(1,)](torch.tensor([2, 0], dtype=torch.int32))
    except Exception as e:  # noqa: BLE001 - any failure of the probe makes every interpreted test meaningless
        return (f"Triton {triton.__version__}'s interpreter cannot run a loop to a loaded bound with NumPy "
                f"{np.__version__} (use numpy < 2.4, a newer Triton, or a GPU): {str(e)[:120]}")
    return None


def pytest_collection_modifyitems(config, items):
    interpreted = [item for item in items if item.get_closest_marker("triton")]
    if interpreted and os.environ.get("TRITON_INTERPRET") == "1":
        problem = _interpreter_problem()
        if problem:
            for item in interpreted:
                item.add_marker(pytest.mark.skip(reason=problem))
