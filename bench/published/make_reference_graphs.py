#!/usr/bin/env python3
"""Build structure-only ONNX reference graphs of timm / torchvision image classifiers.

Each model is built with random init (pretrained=False, num_classes=1000), put in eval
mode, re-parameterized / fused for inference where timm offers it
(timm.utils.reparameterize_model), exported at batch 1, FP32, static shapes, opset 17
with the TorchScript exporter (torch.onnx.export(..., dynamo=False); falls back to
dynamo=True if that fails), simplified with onnxslim.slim(), shape-inferred with
onnx.shape_inference.infer_shapes(data_prop=True), and then stripped of weights:
every FLOAT / FLOAT16 initializer with more than 1024 elements keeps name, dims and
data_type but loses its data and is marked EXTERNAL (location='stripped-weights').
Integer initializers (shape tensors) and small float ones are kept intact.

Output: <out>/<model>-<size>.onnx and <out>/provenance.json (updated after every model).

Usage (with the venv that has torch, timm, onnx, onnxslim, onnxscript):
    python bench/published/make_reference_graphs.py --out bench/published/graphs [--only resnet50 ...]

Load a result with onnx.load(path, load_external_data=False).

Set-up (a throwaway venv; timm is not a dependency of the project, and torch must stay the CPU build):
    python3.11 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch==2.13.0
    /tmp/refvenv/bin/pip install timm onnx==1.21.0 onnxslim onnxscript   # check torch is still 2.13.0+cpu
The models are the ones bench/published/latencies.json names (TIMM_MODELS); Swin-B/384 goes through torch.export
(DYNAMO_EXPORT) and comes out at opset 18.
"""
import argparse
import hashlib
import json
import os
import sys
import time
import traceback

import numpy as np
import torch

# --- torchvision shim -------------------------------------------------------------
# The torchvision wheel reachable here is a CUDA build whose compiled ops (_C.so) cannot
# load against a CPU-only torch; torchvision/_meta_registrations.py then fails at import
# because torchvision::nms / qnms are undefined. Defining those two schemas (no kernels)
# lets `import torchvision` (and therefore `import timm`) succeed. No exported model uses
# these ops. Harmless when the ops do load (we only define them if they are missing).
def _torchvision_shim():
    try:
        torch.ops.torchvision.nms  # noqa: B018
        return False
    except (AttributeError, RuntimeError):
        pass
    try:
        import importlib.util
        spec = importlib.util.find_spec("torchvision")
        if spec is None:
            return False
        # try loading the real extension first
        so = os.path.join(os.path.dirname(spec.origin), "_C.so")
        try:
            torch.ops.load_library(so)
            return False
        except Exception:
            pass
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_TV_SHIM_LIB"] = lib  # keep alive
        return True
    except Exception:
        return False


TV_SHIM_USED = _torchvision_shim()

import onnx  # noqa: E402
import onnxslim  # noqa: E402
import timm  # noqa: E402
from onnx import TensorProto, numpy_helper, shape_inference  # noqa: E402

try:
    import torchvision  # noqa: E402
    TV_OK = True
    TV_VERSION = torchvision.__version__
except Exception as e:  # pragma: no cover
    TV_OK = False
    TV_VERSION = f"unavailable: {e!r}"

OPSET = 17
STRIP_MIN_ELEMS = 1024  # strip float initializers with MORE than this many elements
BIG_INDEX_ELEMS = 4096  # and integer ones with more than this many (index tables, not shapes)
# The TorchScript exporter leaves Swin's window shapes as runtime Shape arithmetic that ONNX shape inference cannot
# resolve (6.6 of its 47 GMACs counted); torch.export (dynamo=True) gives static shapes.
DYNAMO_EXPORT = {"swin_base_patch4_window12_384"}

# (label_base, timm_name, input_size or None for the model's default)
TIMM_MODELS = [
    ("efficientvit_b1", 224), ("efficientvit_b1", 256), ("efficientvit_b1", 288),
    ("efficientvit_b2", 224), ("efficientvit_b2", 256), ("efficientvit_b2", 288),
    ("efficientvit_b3", 224), ("efficientvit_b3", 256), ("efficientvit_b3", 288),
    ("resnet50", 224), ("resnet101", 224), ("resnetv2_50", 224), ("resnetv2_101", 224),
    ("mobilenetv1_100", 224), ("mobilenetv2_100", 224), ("tf_efficientnet_b0", 224),
    ("nextvit_small", 224), ("nextvit_base", 224), ("nextvit_large", 224),
    ("nextvit_small", 384), ("nextvit_base", 384), ("nextvit_large", 384),
    ("swin_base_patch4_window12_384", 384),
]


def model_specs():
    specs = []
    for item in TIMM_MODELS:
        name, size = (item, None) if isinstance(item, str) else item
        specs.append(dict(source="timm", name=name, size=size))
    return specs


# ----------------------------------------------------------------------------------
def build(spec):
    """Return (model, input_size, reparameterized, n_fused_modules, params_before)."""
    if spec["source"] == "timm":
        m = timm.create_model(spec["name"], pretrained=False, num_classes=1000)
        size = spec["size"] or int(m.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    else:
        if not TV_OK:
            raise RuntimeError(f"torchvision unavailable: {TV_VERSION}")
        m = getattr(torchvision.models, spec["name"])(weights=None, num_classes=1000)
        size = spec["size"] or 224
    m.eval()
    params_before = sum(p.numel() for p in m.parameters())
    # count modules that timm's reparameterize_model would touch
    n_fuse = sum(
        1 for mod in m.modules()
        if mod is not m and (hasattr(mod, "fuse") or hasattr(mod, "reparameterize")
                             or hasattr(mod, "switch_to_deploy"))
    )
    reparam = False
    if n_fuse:
        from timm.utils import reparameterize_model
        m = reparameterize_model(m)
        m.eval()
        reparam = True
    return m, size, reparam, n_fuse, params_before


def export(m, size, path, dynamo_first=False):
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        y = m(x)
    out_shape = list(y.shape)
    kw = dict(opset_version=OPSET, input_names=["input"], output_names=["output"],
              do_constant_folding=True)
    try:
        if dynamo_first:
            raise RuntimeError("this model exports with dynamo=True (DYNAMO_EXPORT)")
        torch.onnx.export(m, x, path, dynamo=False, **kw)
        exporter = "torchscript (dynamo=False)"
    except Exception as e:
        print(f"    dynamo=False failed ({e!r}); retrying dynamo=True", flush=True)
        torch.onnx.export(m, (x,), path, dynamo=True, external_data=False, **kw)
        exporter = "dynamo (dynamo=True)"
    return out_shape, exporter


def constants_to_initializers(model):
    """Move Constant nodes carrying a tensor 'value' into graph initializers, so that
    large float constants can be stripped the same way."""
    g = model.graph
    keep = []
    moved = 0
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
            moved += 1
        else:
            keep.append(n)
    if moved:
        del g.node[:]
        g.node.extend(keep)
    return moved


def fold_shape_arithmetic(model, max_in_float=STRIP_MIN_ELEMS, max_out=65536):
    """onnxslim sometimes leaves shape arithmetic such as Gather(<shape const>, -1)
    unfolded, which defeats ONNX shape inference downstream (e.g. efficientvit_* at 224).
    Evaluate, with onnx.reference, every node whose inputs are all initializers that are
    integer or small float tensors, and replace it by an initializer. Repeats until
    nothing changes. Returns the number of nodes folded."""
    from onnx.reference import ReferenceEvaluator
    g = model.graph
    opset = [o for o in model.opset_import]
    folded_total = 0
    while True:
        inits = {t.name: t for t in g.initializer}
        graph_outputs = {o.name for o in g.output}
        folded = 0
        keep = []
        for n in g.node:
            ok = (n.domain in ("", "ai.onnx") and n.op_type not in ("Constant",)
                  and not n.op_type.startswith("Random") and len(n.input) > 0
                  and all((not i) or i in inits for i in n.input)
                  and not any(o in graph_outputs for o in n.output))
            if ok:
                for i in n.input:
                    if i and inits[i].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16,
                                                    TensorProto.DOUBLE, TensorProto.BFLOAT16) \
                            and numel(inits[i].dims) > max_in_float:
                        ok = False
            if ok:
                try:
                    ins = [onnx.helper.make_tensor_value_info(i, inits[i].data_type, list(inits[i].dims))
                           for i in n.input if i]
                    outs = [onnx.helper.make_empty_tensor_value_info(o) for o in n.output]
                    sub = onnx.helper.make_model(
                        onnx.helper.make_graph([n], "fold", ins, outs), opset_imports=opset)
                    feeds = {i: numpy_helper.to_array(inits[i]) for i in n.input if i}
                    res = ReferenceEvaluator(sub).run(None, feeds)
                    if any(np.asarray(r).size > max_out for r in res):
                        raise ValueError("too big")
                    for o, r in zip(n.output, res):
                        g.initializer.append(numpy_helper.from_array(np.asarray(r), o))
                    folded += 1
                    continue
                except Exception:
                    pass
            keep.append(n)
        if not folded:
            break
        folded_total += folded
        del g.node[:]
        g.node.extend(keep)
    if folded_total:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        unused = [t for t in g.initializer if t.name not in used]
        for t in unused:
            g.initializer.remove(t)
    return folded_total


def numel(dims):
    r = 1
    for d in dims:
        r *= int(d)
    return r


def _strip(t):
    """Keep name, dims and type; drop the data; mark it external so onnx.load(load_external_data=False) works."""
    for data in ("raw_data", "float_data", "int32_data", "int64_data"):
        t.ClearField(data)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key = "location"
    e.value = "stripped-weights"


def strip_weights(model):
    stripped = kept_float = kept_other = 0
    stripped_elems = 0
    for t in model.graph.initializer:
        is_float = t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
        # integer index tables (Swin's relative-position GatherND indices) are never shape tensors: dims suffice
        big_index = t.data_type in (TensorProto.INT64, TensorProto.INT32) and numel(t.dims) > BIG_INDEX_ELEMS
        if (is_float and numel(t.dims) > STRIP_MIN_ELEMS) or big_index:
            _strip(t)
            stripped += 1
            stripped_elems += numel(t.dims)
        elif is_float:
            kept_float += 1
        else:
            kept_other += 1
    return dict(stripped=stripped, stripped_elems=stripped_elems,
                kept_small_float=kept_float, kept_nonfloat=kept_other)


def shape_report(model):
    """Shape-infer with data propagation; count how many node outputs have a fully
    static shape."""
    inf = shape_inference.infer_shapes(model, data_prop=True)
    g = inf.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            shapes[vi.name] = None
            continue
        dims = []
        for d in tt.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") else None)
        shapes[vi.name] = dims
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    total = static = 0
    missing = []
    for n in g.node:
        for o in n.output:
            if not o:
                continue
            total += 1
            s = shapes.get(o)
            if s is not None and all(d is not None for d in s):
                static += 1
            else:
                missing.append(o)
    out = shapes.get(g.output[0].name)
    return inf, shapes, dict(node_outputs=total, static=static, unresolved=len(missing),
                              unresolved_examples=missing[:5]), out


def _attr(n, name, default=None):
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count_macs(inf_model, shapes):
    """MACs of Conv / ConvTranspose / MatMul / Gemm from inferred shapes."""
    macs = 0
    per_op = {}
    unknown = 0
    for n in inf_model.graph.node:
        op = n.op_type
        c = None
        try:
            if op == "Conv":
                w = shapes[n.input[1]]
                y = shapes[n.output[0]]
                # y: N, Cout, *spatial ; w: Cout, Cin/g, *k
                c = numel(y) * numel(w[1:])
            elif op == "ConvTranspose":
                w = shapes[n.input[1]]
                x = shapes[n.input[0]]
                # each input element is multiplied by Cout/g * k
                c = numel(x) * numel(w[1:])
            elif op == "MatMul":
                a = shapes[n.input[0]]
                y = shapes[n.output[0]]
                k = a[-1]
                c = numel(y) * k
            elif op == "Gemm":
                a = shapes[n.input[0]]
                y = shapes[n.output[0]]
                k = a[0] if _attr(n, "transA", 0) else a[1]
                c = numel(y) * k
        except (KeyError, TypeError):
            c = None
            unknown += 1
        if c is not None:
            macs += c
            per_op[op] = per_op.get(op, 0) + c
    return macs, per_op, unknown


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions():
    return {
        "timm": timm.__version__,
        "torch": torch.__version__,
        "torchvision": TV_VERSION + (" (compiled ops not loadable; nms/qnms schema shim used)"
                                     if TV_SHIM_USED else ""),
        "onnx": onnx.__version__,
        "onnxslim": onnxslim.__version__,
        "onnxscript": __import__("onnxscript").__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def process(spec, out_dir):
    t0 = time.time()
    m, size, reparam, n_fuse, params_before = build(spec)
    label_base = spec["name"] if spec["source"] == "timm" else f"torchvision_{spec['name']}"
    label = f"{label_base}-{size}"
    params = sum(p.numel() for p in m.parameters())
    params_trainable_before = params_before
    tmp_path = os.path.join(out_dir, f".{label}.raw.onnx")
    torch_out_shape, exporter = export(m, size, tmp_path, dynamo_first=spec["name"] in DYNAMO_EXPORT)
    raw = onnx.load(tmp_path)
    raw_nodes = len(raw.graph.node)
    os.remove(tmp_path)
    slim = onnxslim.slim(raw)
    del raw
    moved = constants_to_initializers(slim)
    folded = 0
    for _ in range(5):  # fold -> slim until stable
        f = fold_shape_arithmetic(slim)
        if not f:
            break
        folded += f
        slim = onnxslim.slim(slim)
        moved += constants_to_initializers(slim)
    inf, shapes, srep, out_shape = shape_report(slim)
    macs, per_op, mac_unknown = count_macs(inf, shapes)
    full_param_elems = sum(numel(t.dims) for t in slim.graph.initializer
                           if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16))
    strip = strip_weights(slim)
    path = os.path.join(out_dir, f"{label}.onnx")
    onnx.save(slim, path)  # value_info is not saved; consumers re-run shape inference
    # verify
    re = onnx.load(path, load_external_data=False)
    _, _, srep2, out2 = shape_report(re)
    if out2 != torch_out_shape:
        raise RuntimeError(f"output shape mismatch: onnx {out2} vs torch {torch_out_shape}")
    if out_shape != out2:
        raise RuntimeError(f"output shape changed by stripping: {out_shape} -> {out2}")
    ops = {}
    for n in re.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    rec = {
        "source": spec["source"],
        ("timm_name" if spec["source"] == "timm" else "torchvision_name"): spec["name"],
        "input_size": size,
        "input_shape": [1, 3, size, size],
        "output_shape": out2,
        "reparameterized": reparam,
        "reparameterize_note": (f"timm.utils.reparameterize_model applied ({n_fuse} fusable modules)"
                                if reparam else "no fuse/reparameterize/switch_to_deploy modules in timm model"),
        "params": int(params),
        "params_before_reparam": int(params_trainable_before),
        "onnx_float_initializer_elems": int(full_param_elems),
        "gmacs": round(macs / 1e9, 4),
        "macs": int(macs),
        "macs_by_op": {k: int(v) for k, v in sorted(per_op.items())},
        "macs_method": "Conv/ConvTranspose/MatMul/Gemm MACs from ONNX shape inference (data_prop=True) on the slimmed graph",
        "macs_nodes_unresolved": mac_unknown,
        "exporter": exporter,
        "nodes_raw_export": raw_nodes,
        "nodes": len(re.graph.node),
        "op_counts": dict(sorted(ops.items())),
        "constants_moved_to_initializers": moved,
        "shape_arith_nodes_folded_after_slim": folded,
        "strip": strip,
        "shape_inference_before_strip": srep,
        "shape_inference_after_strip": srep2,
        "file": os.path.basename(path),
        "file_bytes": os.path.getsize(path),
        "sha256": sha256(path),
        "seconds": round(time.time() - t0, 1),
    }
    return label, rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", help="timm names (or torchvision_resnet50) to process")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing provenance.json")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    prov_path = os.path.join(args.out, "provenance.json")
    prov = {}
    if os.path.exists(prov_path) and not args.fresh:
        with open(prov_path) as f:
            prov = json.load(f)
    v = versions()
    prov.update(v)
    prov["exporter"] = (f"torch.onnx.export(model.eval(), x, path, opset_version={OPSET}, dynamo=False, "
                        "do_constant_folding=True), batch 1, FP32, static shapes; then onnxslim.slim(model); "
                        "large Constant nodes moved to initializers; float initializers with >"
                        f"{STRIP_MIN_ELEMS} elements stripped (data_location=EXTERNAL, location='stripped-weights')")
    prov["opset"] = OPSET
    prov["script"] = "bench/published/make_reference_graphs.py"
    prov.setdefault("models", {})
    prov.setdefault("skipped", {})
    prov.setdefault("failed", {})

    def save():
        with open(prov_path + ".tmp", "w") as f:
            json.dump(prov, f, indent=1, sort_keys=False)
        os.replace(prov_path + ".tmp", prov_path)

    available = set(timm.list_models())
    for spec in model_specs():
        key = spec["name"] if spec["source"] == "timm" else f"torchvision_{spec['name']}"
        if args.only and key not in args.only:
            continue
        if spec["source"] == "timm" and spec["name"] not in available:
            prov["skipped"][spec["name"]] = f"not in timm {timm.__version__}"
            save()
            continue
        print(f"== {key} size={spec['size']}", flush=True)
        try:
            label, rec = process(spec, args.out)
            prov["models"][label] = rec
            prov["failed"].pop(label, None)
            print(f"   ok {label}: {rec['file_bytes']/1024:.0f} KB, {rec['gmacs']} GMACs, "
                  f"params {rec['params']/1e6:.2f}M, reparam={rec['reparameterized']}, "
                  f"unresolved={rec['shape_inference_after_strip']['unresolved']}, {rec['seconds']}s",
                  flush=True)
        except Exception as e:
            label = f"{key}-{spec['size'] or 'default'}"
            prov["failed"][label] = f"{type(e).__name__}: {e}"[:2000]
            traceback.print_exc()
        save()
    print("done", flush=True)


if __name__ == "__main__":
    main()
