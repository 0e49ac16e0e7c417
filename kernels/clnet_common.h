/* Shared definitions for every clnet kernel.
 * CLNET_REAL is float or double, chosen by the host through -D CLNET_REAL=...;
 * CLNET_USE_DOUBLE is defined for double so that the fp64 extension is enabled. */
#pragma once

#ifdef CLNET_USE_DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#ifndef CLNET_REAL
#define CLNET_REAL float
#endif

typedef CLNET_REAL real;

/* Token pasting after macro expansion, e.g. CLNET_CAT(float, 16) -> float16. */
#define CLNET_CAT2(a, b) a##b
#define CLNET_CAT(a, b) CLNET_CAT2(a, b)

/* Clamp that lets NaN through: the host reference does the same, so non-finite
 * values propagate identically on every backend (fmin/fmax would swallow NaN). */
inline real clnet_clamp(real z, real lo, real hi)
{
    return z < lo ? lo : (z > hi ? hi : z);
}

inline real clnet_sigmoid(real z)
{
    return (real)1 / ((real)1 + exp(-z));
}
