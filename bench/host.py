"""The host a benchmark ran on, in one line: CPU model, cores, vector extensions.

Speed ratios hold only for the host they were measured on (AVX2-only AMD EPYC and AVX-512 Intel
Xeon hosts rank our kernels differently), so every speed benchmark prints this first.
"""

import os
import platform

# The vector extensions that decide which kernels are fast, in the order people name them.
VECTOR_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "sve",
)


def cpu_info():
    """{"model", "vendor", "family", "model_number", "flags"} from /proc/cpuinfo (Linux), with
    the processor name of `platform` elsewhere."""
    info = {"model": platform.processor() or platform.machine(), "flags": set()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                # The first processor's block is enough: its flags line ends the reading.
                if key == "model name":
                    info["model"] = value
                elif key == "vendor_id":
                    info["vendor"] = value
                elif key == "cpu family":
                    info["family"] = value
                elif key == "model":
                    info["model_number"] = value
                elif key in ("flags", "Features"):
                    info["flags"] = set(value.split())
                    break
    except OSError:
        pass
    return info


def describe_host():
    """'host: AMD EPYC (AuthenticAMD family 25 model 17), 2 cores; vector extensions: ...'."""
    info = cpu_info()
    parts = [info.get("vendor", "")]
    parts += [
        f"{name} {info[key]}"
        for key, name in (("family", "family"), ("model_number", "model"))
        if key in info
    ]
    ident = " ".join(p for p in parts if p)
    ident = f" ({ident})" if ident else ""
    vectors = [flag for flag in VECTOR_FLAGS if flag in info["flags"]] or ["none known"]
    return (
        f"host: {info['model']}{ident}, {os.cpu_count()} cores; vector extensions: "
        f"{' '.join(vectors)}"
    )


if __name__ == "__main__":
    print(describe_host())
