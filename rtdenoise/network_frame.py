"""The network frame of a one-frame call, compiled (numba + BLAS), without the graph runtime.

Live mode calls the step with one STFT frame at a time. Through ONNX Runtime such a call costs
~370 us, of which the network's ~1.3 M multiply-accumulates take ~90 us: the rest is dispatch
over ~330 graph nodes of tiny tensors (slices, concats, layout reorders). ``NetworkFrame``
computes the same frame in one compiled function: every conv as one BLAS matrix product over a
column buffer (im2col), the SE windows, the codebook search, the transposed convs and the head
in plain loops, the state updated in place.

It computes the call that runs the network (``held_frames`` answers the others when the frame
stride R > 1): features, band compression, the R input frames stacked as channels (and the
harmonic comb channel of ``harmonic.py`` where the model has it: ``_comb_channel``; and the
pitch rows of the frame, given by the backend, for a model with the pitch channel), the
encoder, bottleneck, vector quantizer and decoder, the head and the mask, then the grid state
(frames shift, head output held, phase advanced). The states are the graph's own arrays in
the graph's layouts, read and written in place, so network frames computed here, held frames
and graph calls of any block size interleave freely (tests assert masks and states equal the
graph's).

Weights come from the exported sidecar ``NAME.npz`` (``export.write_weights``): the
BatchNorm-folded tensors of the inference copy in torch layout, keyed by their ``state_dict``
names, loaded with numpy. They are laid out once into one flat arena of matrices; the work
buffers are another arena; nothing is allocated per call.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numba import njit

log = logging.getLogger(__name__)

#: kinds of state, in the graph's order (``RtUNet._state_layout``)
_GRID_STATES = ("frames", "held", "phase")


def weights_path(model_path: str | Path) -> Path:
    """The weights sidecar of an exported model: ``NAME.npz`` beside ``NAME.onnx``."""
    return Path(model_path).with_suffix(".npz")


class _Arena:
    """Matrices packed into one flat float32 array; ``table`` rows are (offset, rows, cols)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._rows: list[tuple[int, int, int]] = []
        self._size = 0

    def add(self, m: np.ndarray) -> int:
        m = np.asarray(m, np.float32)
        m = m.reshape(1, -1) if m.ndim == 1 else m
        assert m.ndim == 2, m.shape
        self._parts.append(m.ravel())
        self._rows.append((self._size, m.shape[0], m.shape[1]))
        self._size += m.size
        return len(self._rows) - 1

    def zeros(self, rows: int, cols: int) -> int:
        return self.add(np.zeros((rows, cols), np.float32))

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        flat = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
        return np.ascontiguousarray(flat, np.float32), np.asarray(self._rows, np.int64)


class NetworkFrame:
    """One network frame of the exported step, for one-frame calls (any number of streams)."""

    def __init__(self, meta: dict, weights: Mapping[str, np.ndarray], n_freqs: int) -> None:
        cfg = meta["model_config"]
        w = [int(c) for c in cfg["widths"]]
        self.stride = r = int(cfg.get("frame_stride", 1))
        self.affine = cfg.get("mask_head", "conv") == "affine"
        kf = int(cfg["freq_kernel"])
        kfb = int(cfg.get("bottleneck_freq_kernel", 1))
        dil = [int(d) for d in cfg["bottleneck_dilations"]]
        groups = int(cfg.get("bottleneck_groups", 1))
        split, width = int(cfg.get("band_split", 0)), int(cfg.get("band_width", 1))
        if width == 1:
            split = n_freqs
        n_bins = split + (n_freqs - split) // width
        freqs = [n_bins]
        for _ in w:
            freqs.append((freqs[-1] + 1) // 2)
        ctx = int(cfg["context_frames"]) // r
        code_dim = int(cfg["code_dim"])

        def get(name: str) -> np.ndarray:
            return np.asarray(weights["net." + name], np.float32)

        wa, sa = _Arena(), _Arena()  # weights, work buffers
        wi: list[int] = []  # weight matrices in the order the kernel reads them
        si: list[int] = []  # work buffers likewise

        def conv(name: str) -> None:  # [Cout, Cin/g, kt, kf] -> [Cout, Cin/g * kt * kf], bias
            wt = get(name + ".weight")
            wi.append(wa.add(wt.reshape(wt.shape[0], -1)))
            wi.append(wa.add(get(name + ".bias")))

        def se(name: str, c: int) -> None:
            for fc in ("fc1", "fc2"):
                wt = get(f"{name}.{fc}.weight")
                wi.append(wa.add(wt.reshape(wt.shape[0], -1)))
                wi.append(wa.add(get(f"{name}.{fc}.bias")))
            hidden = wt.shape[1]
            si.append(sa.zeros(1, c))  # window means
            si.append(sa.zeros(1, hidden))

        feats = meta["features"]
        wi.append(wa.add(np.asarray(feats["mean"], np.float32)))
        wi.append(wa.add(np.asarray(feats["std"], np.float32)))
        si.append(sa.zeros(1, n_freqs))  # normalised features
        harm = bool(cfg.get("harmonic_channel", False))
        pitch = bool(cfg.get("pitch_channel", False))
        n_in = r + int(harm) + int(pitch)
        # network input: R frames (and the comb, and the pitch rows) as channels
        si.append(sa.zeros(n_in, n_bins))
        cin = n_in
        for i, c in enumerate(w):
            conv(f"enc.{i}.conv.block.conv")
            si.append(sa.zeros(cin * 2 * kf, freqs[i + 1]))  # columns
            si.append(sa.zeros(c, freqs[i + 1]))  # stage output (the skip)
            se(f"enc.{i}.se", c)
            cin = c
        cg = w[-1] // groups
        for j in range(len(dil)):
            conv(f"mid.{j}.block.conv")
            si.append(sa.zeros(cg * 2 * kfb, freqs[-1]))
            si.append(sa.zeros(w[-1], freqs[-1]))
        se("mid_se", w[-1])
        conv("pre_vq")
        si.append(sa.zeros(code_dim, freqs[-1]))  # z
        si.append(sa.zeros(freqs[-1], code_dim))  # z^T
        cb = get("vq.codebook")
        wi.append(wa.add(np.ascontiguousarray(cb.T * -2.0)))  # exact, as in the graph
        wi.append(wa.add(get("vq.code_sqnorm")))
        wi.append(wa.add(cb))
        si.append(sa.zeros(freqs[-1], cb.shape[0]))  # distances
        si.append(sa.zeros(code_dim, freqs[-1]))  # q
        conv("post_vq.block.conv")
        si.append(sa.zeros(code_dim * 2, freqs[-1]))
        si.append(sa.zeros(w[-1], freqs[-1]))
        n = len(w)
        for k in range(n):
            i = n - 1 - k
            wt = get(f"dec.{k}.conv.weight")  # [Cin, Cout, 1, 3]
            cout = wt.shape[1]
            taps = np.ascontiguousarray(wt[:, :, 0, :].transpose(2, 1, 0))  # [3, Cout, Cin]
            wi.append(wa.add(taps.reshape(-1, wt.shape[0])))
            wi.append(wa.add(get(f"dec.{k}.conv.bias")))
            si.append(sa.zeros(wt.shape[0], freqs[i + 1]))  # cat(u, skip)
            si.append(sa.zeros(3 * cout, freqs[i + 1]))  # per-tap products
            si.append(sa.zeros(cout, freqs[i]))
            se(f"dec.{k}.se", cout)
        conv("out")
        n_out = get("out.bias").shape[0]
        si.append(sa.zeros((w[0] + n_in) * kf, n_bins))
        si.append(sa.zeros(n_out, n_bins))
        if harm:  # the comb's tables and work buffer, last in their lists
            for key in ("comb", "scored", "window", "mask", "consts"):
                wi.append(wa.add(get("harmonic." + key)))
            si.append(sa.zeros(2, get("harmonic.comb").shape[0]))  # scores, choice
        self.weights, self.w_table = wa.build()
        self.work, self.s_table = sa.build()
        self.w_index = np.asarray(wi, np.int64)
        self.s_index = np.asarray(si, np.int64)
        index = np.arange(n_freqs)
        index[split:] = split + (index[split:] - split) // width
        self.band_of_bin = index.astype(np.int64)
        self.dims = np.asarray(
            [len(w), len(dil), r, kf, kfb, groups, split, width, int(self.affine), ctx, int(harm)]
            + [int(pitch)]
            + dil,
            np.int64,
        )
        self.eps = np.float32(cfg.get("feat_eps", 1e-10))
        #: whether a step takes the pitch rows of its frame; a placeholder where it does not
        self.has_pitch = pitch
        self._no_pitch = np.zeros((1, 1), np.float32)
        self.calls = 0  # network frames computed here (tests, benchmarks)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def applies(meta: dict, state_names: list[str]) -> bool:
        """True for an ``rt`` step this module computes: causal, time kernel 2, no lookahead,
        feature statistics in the metadata, and the graph's state layout."""
        cfg = meta.get("model_config") or {}
        r = int(cfg.get("frame_stride", 1))
        grid = list(_GRID_STATES) if r > 1 else []
        n_enc = len(cfg.get("widths", ()))
        n_mid = len(cfg.get("bottleneck_dilations", ()))
        names = [f"enc{i}_{s}" for i in range(n_enc) for s in ("conv", "se")]
        names += [f"mid{j}_conv" for j in range(n_mid)] + ["mid_se", "codes"]
        names += [f"dec{k}_se" for k in range(n_enc)] + grid
        return (
            cfg.get("preset") == "rt"
            and int(cfg.get("time_kernel", 0)) == 2
            and int(cfg.get("lookahead_frames", 0)) == 0
            and "features" in meta
            and state_names == names
        )

    @classmethod
    def load(
        cls, model_path: str | Path, meta: dict, state_names: list[str], n_freqs: int
    ) -> NetworkFrame | None:
        """The compiled network frame of an exported model, or None where it does not apply
        or the weights sidecar is missing (older exports: the graph computes every frame)."""
        path = weights_path(model_path)
        if not cls.applies(meta, state_names) or not path.is_file():
            return None
        try:
            with np.load(path) as npz:
                weights = {k: npz[k] for k in npz.files}
            mean = np.asarray(meta["features"]["mean"], np.float32)
            if not np.allclose(weights["feat_mean"], mean, rtol=0, atol=1e-6):
                raise ValueError("its feature statistics are not the model's")
            return cls(meta, weights, n_freqs)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            log.warning(
                "ignoring the weights sidecar %s (%s): the graph runs the network", path, exc
            )
            return None

    # ------------------------------------------------------------------ per call
    @staticmethod
    def views(state: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """3-D views ``[C, a, b]`` of the state arrays (in place), as the kernel takes them."""
        return tuple(s.reshape(s.shape[0], s.shape[1], -1) for s in state)

    def step(
        self,
        spec_ri: np.ndarray,
        views: tuple[np.ndarray, ...],
        mask: np.ndarray,
        frame: int = 0,
        pitch: np.ndarray | None = None,
    ) -> None:
        """Frame ``frame`` of spec_ri ``[C, K, F, 2]`` (+ its pitch rows ``[C, F_c]`` for a
        model with the pitch channel) -> that frame of mask ``[C, K, F]`` (written); the state
        (``views`` of the graph's state arrays) advanced by one network frame in place."""
        if self.has_pitch and pitch is None:
            raise ValueError("this model has the pitch channel: the step needs its rows")
        _network_frame(
            spec_ri,
            views,
            mask,
            self.weights,
            self.w_table,
            self.w_index,
            self.work,
            self.s_table,
            self.s_index,
            self.band_of_bin,
            self.dims,
            self.eps,
            frame,
            pitch if self.has_pitch else self._no_pitch,
        )
        self.calls += 1


def built_here() -> bool:
    """Whether this process compiled the kernel (numba found no usable cache for it)."""
    stats = getattr(_network_frame, "stats", None)
    return bool(getattr(stats, "cache_misses", None))


# ============================================================================ kernel
#: sums may be reassociated (vectorised) and multiply-adds fused: only the rounding of float
#: sums changes (the graph's own kernels sum in their own orders too)
_SUMS = {"reassoc", "contract", "nsz"}


@njit(cache=True, nogil=True)
def _mat(arena, table, i):
    o, r, c = table[i, 0], table[i, 1], table[i, 2]
    return arena[o : o + r * c].reshape((r, c))


@njit(cache=True, nogil=True)
def _bias_act(out, b, relu):
    for o in range(out.shape[0]):
        for f in range(out.shape[1]):
            v = out[o, f] + b[o]
            out[o, f] = v if (v > 0.0 or not relu) else 0.0


@njit(cache=True, nogil=True)
def _causal_conv(prev, prev_off, cur, w, b, col, out, stride, kf, relu):
    """out ``[Cout, Fo]`` = act(w @ columns + b): time taps (prev, cur), frequency kernel kf
    (zero padded kf // 2), stride in frequency; ``prev[:, prev_off : prev_off + F]`` is the
    older tap."""
    cin, f = cur.shape
    fo_n = out.shape[1]
    p = kf // 2
    for ci in range(cin):
        for t in range(2):
            for k in range(kf):
                row = (ci * 2 + t) * kf + k
                for fo in range(fo_n):
                    fi = fo * stride - p + k
                    if 0 <= fi < f:
                        col[row, fo] = prev[ci, prev_off + fi] if t == 0 else cur[ci, fi]
                    else:
                        col[row, fo] = 0.0
    np.dot(w, col, out)
    _bias_act(out, b, relu)


@njit(cache=True, nogil=True, fastmath=_SUMS)
def _squeeze_excite(y, hist, w1, b1, w2, b2, s, h, ctx):
    """y ``[C, F]`` scaled in place by the SE gains of the causal window mean (the history
    plus this frame's channel means over frequency); the history shifts by one."""
    c_n, f_n = y.shape
    n_h = hist.shape[1]
    inv = np.float32(1.0) / np.float32(ctx)
    for c in range(c_n):
        m = np.float32(0.0)
        for f in range(f_n):
            m += y[c, f]
        m = m / np.float32(f_n)
        acc = np.float32(0.0)
        for j in range(n_h):
            acc += hist[c, j] * inv
        s[0, c] = acc + m * inv
        for j in range(n_h - 1):
            hist[c, j] = hist[c, j + 1]
        if n_h > 0:
            hist[c, n_h - 1] = m
    for j in range(w1.shape[0]):
        a = b1[0, j]
        for c in range(c_n):
            a += w1[j, c] * s[0, c]
        h[0, j] = a if a > 0.0 else 0.0
    for c in range(c_n):
        a = b2[0, c]
        for j in range(w1.shape[0]):
            a += w2[c, j] * h[0, j]
        g = np.float32(1.0) / (np.float32(1.0) + np.exp(-a))
        for f in range(f_n):
            y[c, f] *= g


@njit(cache=True, nogil=True)
def _se_from(y, hist, wts, wtab, widx, wp, work, stab, sidx, sp, ctx):
    """``_squeeze_excite`` with its weights at ``widx[wp : wp + 4]`` (fc1, its bias, fc2, its
    bias) and its work buffers at ``sidx[sp : sp + 2]``."""
    _squeeze_excite(y, hist, _mat(wts, wtab, widx[wp]), _mat(wts, wtab, widx[wp + 1]),
                    _mat(wts, wtab, widx[wp + 2]), _mat(wts, wtab, widx[wp + 3]),
                    _mat(work, stab, sidx[sp]), _mat(work, stab, sidx[sp + 1]), ctx)  # fmt: skip


@njit(cache=True, nogil=True, fastmath=_SUMS)
def _comb_channel(xl, comb, scored, win, msk, beta, noise, sc, out):
    """``harmonic.HarmonicComb`` on one frame: xl ``[F_c]`` -> out ``[F_c]``; ``sc [2, C]``
    holds the candidates' scores and soft choice."""
    n_f, n_c = xl.shape[0], comb.shape[0]
    m = np.float32(0.0)
    for k in range(n_f):
        m += xl[k] * win[k]
    ss = np.float32(0.0)
    for k in range(n_f):  # the centred frame, in out until the end
        v = (xl[k] - m) * msk[k]
        out[k] = v
        ss += v * v
    norm = np.sqrt(ss) + np.float32(1e-6)
    for c in range(n_c):
        sc[0, c] = 0.0
    for k in range(n_f):
        v = out[k]
        if v != 0.0:
            for c in range(n_c):
                sc[0, c] += v * scored[k, c]
    top = -np.inf
    for c in range(n_c):
        sc[0, c] /= norm
        top = max(top, beta * sc[0, c])
    total = np.float32(0.0)
    for c in range(n_c):
        e = np.exp(beta * sc[0, c] - top)
        sc[1, c] = e
        total += e
    s = np.float32(0.0)
    for c in range(n_c):
        sc[1, c] /= total
        s += sc[1, c] * sc[0, c]
    strength = max(s - noise, np.float32(0.0)) * np.float32(2.0)
    for k in range(n_f):
        a = np.float32(0.0)
        for c in range(n_c):
            a += sc[1, c] * comb[c, k]
        out[k] = a * strength


@njit(cache=True, nogil=True, fastmath=_SUMS)
def _network_frame(spec, states, mask, wts, wtab, widx, work, stab, sidx, band_of_bin, dims,
                   eps, k_in, pitch):  # fmt: skip
    n_enc, n_mid, r, kf, kfb = dims[0], dims[1], dims[2], dims[3], dims[4]
    groups, split, width, affine, ctx = dims[5], dims[6], dims[7], dims[8] != 0, dims[9]
    n_f = spec.shape[2]
    for b in range(spec.shape[0]):
        wp = 0  # next weight matrix
        sp = 0  # next work buffer
        st = 0  # next state
        mean = _mat(wts, wtab, widx[wp])
        std = _mat(wts, wtab, widx[wp + 1])
        wp += 2
        v = _mat(work, stab, sidx[sp])
        x = _mat(work, stab, sidx[sp + 1])
        sp += 2
        # features, bands, the R frames as channels (the grid's frames state before them)
        for f in range(n_f):
            re = spec[b, k_in, f, 0]
            im = spec[b, k_in, f, 1]
            v[0, f] = (np.log(re * re + im * im + eps) - mean[0, f]) / std[0, f]
        xr = x[r - 1]
        for f in range(split):
            xr[f] = v[0, f]
        for q in range(split, x.shape[1]):
            a = np.float32(0.0)
            for f in range(split + (q - split) * width, split + (q - split + 1) * width):
                a += v[0, f]
            xr[q] = a / np.float32(width)
        if r > 1:
            frames = states[n_enc * 2 + n_mid + 2 + n_enc]
            for j in range(r - 1):
                x[j, :] = frames[b, j, :]
        if dims[10] != 0:  # the harmonic comb of this frame, one more input channel
            nw = widx.shape[0]
            consts = _mat(wts, wtab, widx[nw - 1])
            _comb_channel(xr, _mat(wts, wtab, widx[nw - 5]), _mat(wts, wtab, widx[nw - 4]),
                          _mat(wts, wtab, widx[nw - 3])[0], _mat(wts, wtab, widx[nw - 2])[0],
                          consts[0, 0], consts[0, 1], _mat(work, stab, sidx[sidx.shape[0] - 1]),
                          x[r])  # fmt: skip
        if dims[11] != 0:  # the pitch rows of this frame (``pitch_frame``), the last channel
            xp = x[x.shape[0] - 1]
            for q in range(x.shape[1]):
                xp[q] = pitch[b, q]
        # encoder
        cur = x
        for _ in range(n_enc):
            cache = states[st][b]
            col = _mat(work, stab, sidx[sp])
            y = _mat(work, stab, sidx[sp + 1])
            _causal_conv(cache, 0, cur, _mat(wts, wtab, widx[wp]),
                         _mat(wts, wtab, widx[wp + 1])[0], col, y, 2, kf, True)  # fmt: skip
            cache[:, :] = cur
            _se_from(y, states[st + 1][b], wts, wtab, widx, wp + 2, work, stab, sidx, sp + 2, ctx)
            wp += 6
            sp += 4
            st += 2
            cur = y
        # bottleneck: residual dilated causal convs (groups), then SE
        for j in range(n_mid):
            d = dims[12 + j]
            cache = states[st][b]  # [C, d * F]: the last d frames, oldest first
            w = _mat(wts, wtab, widx[wp])
            bias = _mat(wts, wtab, widx[wp + 1])
            col = _mat(work, stab, sidx[sp])
            y = _mat(work, stab, sidx[sp + 1])
            c_n, f_b = cur.shape
            cg = c_n // groups
            for g in range(groups):
                _causal_conv(cache[g * cg : (g + 1) * cg], 0, cur[g * cg : (g + 1) * cg],
                             w[g * cg : (g + 1) * cg], bias[0, g * cg : (g + 1) * cg], col,
                             y[g * cg : (g + 1) * cg], 1, kfb, True)  # fmt: skip
            for c in range(c_n):
                # shift by one frame (element loops: a slice per frame costs more than its copy)
                for i in range((d - 1) * f_b):
                    cache[c, i] = cache[c, i + f_b]
                for f in range(f_b):
                    cache[c, (d - 1) * f_b + f] = cur[c, f]
                    y[c, f] += cur[c, f]
            wp += 2
            sp += 2
            st += 1
            cur = y
        _se_from(cur, states[st][b], wts, wtab, widx, wp, work, stab, sidx, sp, ctx)
        wp += 4
        sp += 2
        st += 1
        # pre-quantizer 1x1 conv, nearest code per position
        z = _mat(work, stab, sidx[sp])
        zt = _mat(work, stab, sidx[sp + 1])
        np.dot(_mat(wts, wtab, widx[wp]), cur, z)
        _bias_act(z, _mat(wts, wtab, widx[wp + 1])[0], False)
        for dd in range(z.shape[0]):
            for f in range(z.shape[1]):
                zt[f, dd] = z[dd, f]
        cbm2 = _mat(wts, wtab, widx[wp + 2])
        sq = _mat(wts, wtab, widx[wp + 3])
        cb = _mat(wts, wtab, widx[wp + 4])
        dist = _mat(work, stab, sidx[sp + 2])
        q = _mat(work, stab, sidx[sp + 3])
        np.dot(zt, cbm2, dist)
        for f in range(dist.shape[0]):
            best = 0
            bv = dist[f, 0] + sq[0, 0]
            for n in range(1, dist.shape[1]):
                dv = dist[f, n] + sq[0, n]
                if dv < bv:
                    bv = dv
                    best = n
            for dd in range(q.shape[0]):
                q[dd, f] = cb[best, dd]
        wp += 5
        sp += 4
        # post-quantizer causal conv over the cached codes of the previous frame
        codes = states[st][b]
        u = _mat(work, stab, sidx[sp + 1])
        _causal_conv(codes, 0, q, _mat(wts, wtab, widx[wp]), _mat(wts, wtab, widx[wp + 1])[0],
                     _mat(work, stab, sidx[sp]), u, 1, 1, True)  # fmt: skip
        codes[:, :] = q
        wp += 2
        sp += 2
        st += 1
        # decoder: cat(u, skip) -> transposed conv (1, 3) stride 2 -> ReLU -> SE
        for k in range(n_enc):
            i = n_enc - 1 - k
            skip = _mat(work, stab, sidx[2 + 4 * i + 1])
            cat = _mat(work, stab, sidx[sp])
            prod = _mat(work, stab, sidx[sp + 1])
            out = _mat(work, stab, sidx[sp + 2])
            cu = u.shape[0]
            cat[:cu] = u
            cat[cu:] = skip
            np.dot(_mat(wts, wtab, widx[wp]), cat, prod)
            bias = _mat(wts, wtab, widx[wp + 1])
            cout, fo_n = out.shape
            for o in range(cout):
                out[o, :] = bias[0, o]
            for t in range(3):
                for fi in range(cat.shape[1]):
                    fo = 2 * fi - 1 + t
                    if 0 <= fo < fo_n:
                        for o in range(cout):
                            out[o, fo] += prod[t * cout + o, fi]
            for o in range(cout):
                for f in range(fo_n):
                    if out[o, f] < 0.0:
                        out[o, f] = 0.0
            _se_from(out, states[st][b], wts, wtab, widx, wp + 2, work, stab, sidx, sp + 3, ctx)
            wp += 6
            sp += 5
            st += 1
            u = out
        # head over cat(u, network input), frequency kernel kf, stride 1
        col = _mat(work, stab, sidx[sp])
        head = _mat(work, stab, sidx[sp + 1])
        cu = u.shape[0]
        p = kf // 2
        n_b = head.shape[1]
        for ci in range(cu + x.shape[0]):
            for k in range(kf):
                row = ci * kf + k
                for fo in range(n_b):
                    fi = fo - p + k
                    if 0 <= fi < n_b:
                        col[row, fo] = u[ci, fi] if ci < cu else x[ci - cu, fi]
                    else:
                        col[row, fo] = 0.0
        np.dot(_mat(wts, wtab, widx[wp]), col, head)
        _bias_act(head, _mat(wts, wtab, widx[wp + 1])[0], False)
        # mask per bin: the head's band value (affine: offset + slope x the frame's feature)
        for f in range(n_f):
            q_b = band_of_bin[f]
            z_f = head[0, q_b] + head[1, q_b] * v[0, f] if affine else head[0, q_b]
            z_f = min(max(z_f, np.float32(-80.0)), np.float32(80.0))
            mask[b, k_in, f] = np.float32(1.0) / (np.float32(1.0) + np.exp(-z_f))
        # the grid: input frames shift, head output held, phase advances
        if r > 1:
            frames = states[st]
            held = states[st + 1]
            phase = states[st + 2]
            for j in range(r - 2):
                frames[b, j, :] = frames[b, j + 1, :]
            frames[b, r - 2, :] = xr
            held[b, :, :] = head
            phase[b, 0, 0] = (phase[b, 0, 0] + np.float32(1.0)) % np.float32(r)
