/* Vectorisable float32 versions of the math builtins used by the activations.
 *
 * On CPU devices (PoCL) the float builtins log, log1p, expm1 and sin compile to one
 * scalar library call per lane, which stops the lane loops of the kernels from
 * vectorising. The functions here use only arithmetic, integer bit operations and
 * selects on values computed for every lane (no branches, no tables, no calls), so a
 * loop over lanes becomes SIMD code.
 *
 * Each one reduces the argument exactly (exponent bits for log, Cody-Waite with split
 * constants for expm1 and sin) and evaluates a near-minimax polynomial whose
 * coefficients come from tools/fit_clnet_math.py. Accuracy, measured against a float64
 * reference (tests/test_clnet_math.py, tools/check_clnet_math.py): a few ulp at most
 * over the whole float range, with IEEE special values (NaN in -> NaN out, infinities
 * and zeros as the C library returns them).
 *
 * The products k * CONST_i in the reductions are exact (the constants have at most 12
 * significant bits and |k| < 2^13), so the result is the same whether or not the
 * compiler contracts them into fused multiply-adds.
 *
 * Only float versions: double builds keep the builtins. */
#pragma once

/* v rounded to the nearest integer (ties to even), as a float and in *k, for
 * |v| < 2^22. Adding 1.5 * 2^23 pushes the fraction bits out of the significand; the
 * low bits of the sum's representation then hold the integer. No rint or float-to-int
 * conversion: PoCL does not vectorise those. */
inline float clnet_rintf_small(float v, int *k)
{
    const float t = v + 0x1.8p23f;
    *k = as_int(t) - 0x4b400000;
    return t - 0x1.8p23f;
}

/* ln 2 = CLNET_LN2_HI + CLNET_LN2_LO (+ 1.7e-12); CLNET_LN2_HI has 12 bits. */
#define CLNET_LN2_HI 0x1.62ep-1f
#define CLNET_LN2_LO 0x1.0bfbe8p-15f

/* log(1 + f) = f - f^2/2 + f^3 P(f) for sqrt(1/2) - 1 <= f < sqrt(2) - 1. */
#define CLNET_LOG_P0 0x1.555554p-2f
#define CLNET_LOG_P1 -0x1.000226p-2f
#define CLNET_LOG_P2 0x1.99a008p-3f
#define CLNET_LOG_P3 -0x1.547244p-3f
#define CLNET_LOG_P4 0x1.22da1cp-3f
#define CLNET_LOG_P5 -0x1.0d8542p-3f
#define CLNET_LOG_P6 0x1.055b6cp-3f
#define CLNET_LOG_P7 -0x1.38b582p-4f

/* Natural logarithm. x < 0 -> NaN, +-0 -> -inf, +inf -> +inf, NaN -> NaN;
 * subnormal x are scaled by 2^23 first. */
inline float clnet_logf(float x)
{
    const int sub = x < 0x1p-126f;
    const float xs = sub ? x * 0x1p23f : x;
    /* Write xs = 2^k * m with sqrt(1/2) <= m < sqrt(2): offsetting the bits by those of
     * sqrt(1/2) makes the exponent field carry exactly when m would reach sqrt(2). */
    const uint ix = as_uint(xs) - 0x3f3504f3u;
    const int k = (as_int(ix) >> 23) - (sub ? 23 : 0);
    const float m = as_float((ix & 0x007fffffu) + 0x3f3504f3u);
    const float f = m - 1.0f; /* exact */
    const float kf = (float)k;
    float p = CLNET_LOG_P7;
    p = p * f + CLNET_LOG_P6;
    p = p * f + CLNET_LOG_P5;
    p = p * f + CLNET_LOG_P4;
    p = p * f + CLNET_LOG_P3;
    p = p * f + CLNET_LOG_P2;
    p = p * f + CLNET_LOG_P1;
    p = p * f + CLNET_LOG_P0;
    const float f2 = f * f;
    float y = f2 * f * p - 0.5f * f2;
    y = y + kf * CLNET_LN2_LO;
    y = y + f;
    y = y + kf * CLNET_LN2_HI;
    return (x > 0.0f && x < INFINITY) ? y : (x == 0.0f ? -INFINITY : (x < 0.0f ? NAN : x));
}

/* log(1 + x), accurate for tiny x. x < -1 -> NaN, -1 -> -inf, +inf -> +inf, NaN -> NaN,
 * +-0 -> +-0. */
inline float clnet_log1pf(float x)
{
    /* u = 1 + x rounded, c its exact rounding error (two-sum); log(u + c) = log(u) + c/u
     * to far better than float precision since |c/u| <= 2^-24. */
    const float u = 1.0f + x;
    const float b = u - 1.0f;
    const float c = (1.0f - (u - b)) + (x - b);
    const float y = clnet_logf(u) + c / u;
    /* log1p(x) rounds to x for |x| < 2^-24: keeps -0 and makes subnormals exact. */
    return fabs(x) < 0x1p-24f ? x : (x == INFINITY ? x : (u == 0.0f ? -INFINITY : y));
}

/* expm1(r) = r + r^2/2 + r^3 Q(r) for |r| <= ln(2)/2. */
#define CLNET_EXPM1_Q0 0x1.555554p-3f
#define CLNET_EXPM1_Q1 0x1.5554f2p-5f
#define CLNET_EXPM1_Q2 0x1.1111cap-7f
#define CLNET_EXPM1_Q3 0x1.6d406cp-10f
#define CLNET_EXPM1_Q4 0x1.9fbdfcp-13f

/* x = k ln 2 + r with |r| <= ln 2 / 2 (k in *k, x within +-129 ln 2); returns expm1(r), a
 * near-minimax polynomial. Shared by clnet_expm1f and clnet_exp_boundedf. */
inline float clnet_expm1_reduced(float x, int *k)
{
    const float kf = clnet_rintf_small(x * 0x1.715476p+0f, k); /* x / ln 2 */
    const float r = (x - kf * CLNET_LN2_HI) - kf * CLNET_LN2_LO;
    float q = CLNET_EXPM1_Q4;
    q = q * r + CLNET_EXPM1_Q3;
    q = q * r + CLNET_EXPM1_Q2;
    q = q * r + CLNET_EXPM1_Q1;
    q = q * r + CLNET_EXPM1_Q0;
    const float r2 = r * r;
    return r + (0.5f * r2 + r2 * r * q);
}

/* exp(x) - 1, accurate near 0. Large x -> +inf, very negative x -> -1, NaN -> NaN,
 * +-0 -> +-0. */
inline float clnet_expm1f(float x)
{
    /* Outside [-30, 89] the result is -1 or +inf anyway; clamping (NaN goes to -30)
     * keeps k a small integer (-44 <= k <= 129). */
    const float xc = x > 89.0f ? 89.0f : (x >= -30.0f ? x : -30.0f);
    int k;
    const float p = clnet_expm1_reduced(xc, &k); /* expm1(r) */
    /* expm1(x) = 2^k expm1(r) + (2^k - 1); 2^k - 1 is exact for the k where it matters.
     * 2^128 is not a float: then scale by 2^127 and double at the end. */
    const int kk = k > 127 ? 127 : k;
    const float s = as_float((uint)(kk + 127) << 23);
    const float y = (s - 1.0f) + s * p;
    /* expm1(x) rounds to x for |x| < 2^-25 (and NaN stays NaN): keeps -0. */
    return (fabs(x) < 0x1p-25f || x != x) ? x : (k > 127 ? y * 2.0f : y);
}

/* e^x for |x| <= 88 or NaN (callers clamp first), as clnet_expm1f reduces it: x = k ln 2 + r
 * with |r| <= ln 2 / 2, e^x = 2^k (1 + expm1(r)), the same polynomial. Within that range
 * 2^k is a normal float or (k = -127) zero, so no case needs a select: about a dozen
 * vector operations per 16 lanes, where PoCL's exp costs several times that. Below 1 ulp
 * where e^x is a normal float (x >= -87.33; below, results under FLT_MIN come out as
 * zero or inexact); NaN in -> NaN out. */
inline float clnet_exp_boundedf(float x)
{
    int k;
    const float p = clnet_expm1_reduced(x, &k); /* |k| <= 127 */
    const float s = as_float((uint)(k + 127) << 23);
    return s + s * p;
}

/* 1 / (1 + e^-z) for z in [-88, 88] or NaN (callers clamp: neat-python's sigmoid clamps 5z
 * to [-60, 60]; beyond 88 the result is 0 or 1 to float precision anyway). At most 2.5 ulp
 * (tests/test_clnet_math.py); it costs half of PoCL's own exp and division, and the
 * sigmoid was 55-65% of a sum-and-sigmoid population's time on PoCL. */
inline float clnet_sigmoid_boundedf(float z)
{
    return 1.0f / (1.0f + clnet_exp_boundedf(-z));
}

/* 1 / (1 + e^-z) for every float, with the builtin formula's values at the ends: exactly 0
 * where its e^-z overflows (z < -88.7228...), exactly 1 for z > 88 (e^-z below half an ulp
 * of 1), infinities to 0 and 1, NaN to NaN. So inf and NaN reach later products as with the
 * builtins (inf * 0 is NaN, inf times a tiny number is not). */
inline float clnet_sigmoidf(float z)
{
    const float t = -z;
    const float tc = t > 88.0f ? 88.0f : (t < -88.0f ? -88.0f : t); /* NaN stays NaN */
    const float s = 1.0f / (1.0f + clnet_exp_boundedf(tc));
    return t > 0x1.62e42ep6f ? 0.0f : s; /* 88.72283935546875: the largest x with finite expf */
}

/* pi/2 = sum of CLNET_PIO2_1..5 (+ 2.7e-24); the first four have at most 11 significant
 * bits, so k * CLNET_PIO2_i is exact for |k| < 2^13. */
#define CLNET_PIO2_1 0x1.92p+0f
#define CLNET_PIO2_2 0x1.fb4p-12f
#define CLNET_PIO2_3 0x1.444p-24f
#define CLNET_PIO2_4 0x1.68cp-39f
#define CLNET_PIO2_5 0x1.1a6264p-54f

/* sin(r) = r + r^3 S(r^2), cos(r) = 1 - r^2/2 + r^4 C(r^2) for |r| <= pi/4. */
#define CLNET_SIN_S0 -0x1.555556p-3f
#define CLNET_SIN_S1 0x1.111108p-7f
#define CLNET_SIN_S2 -0x1.a00f8p-13f
#define CLNET_SIN_S3 0x1.6cd1f2p-19f
#define CLNET_COS_C0 0x1.55554ap-5f
#define CLNET_COS_C1 -0x1.6c0c34p-10f
#define CLNET_COS_C2 0x1.99eb9cp-16f

/* Largest |x| for which clnet_sinf_reduced is accurate. */
#define CLNET_SINF_REDUCED_MAX 8192.0f

/* sin(x) for |x| <= CLNET_SINF_REDUCED_MAX (+-0 -> +-0), and NaN for NaN and infinite x. Any other
 * x (finite, larger) gives 0: callers fix those lanes up with the builtin sin, as
 * clnet_sinf does. */
inline float clnet_sinf_reduced(float x)
{
    const float xc = x > CLNET_SINF_REDUCED_MAX ? CLNET_SINF_REDUCED_MAX
                   : (x >= -CLNET_SINF_REDUCED_MAX ? x : -CLNET_SINF_REDUCED_MAX);
    int k;
    const float kf = clnet_rintf_small(xc * 0x1.45f306p-1f, &k); /* x * 2/pi */
    /* r = x - k pi/2. The first two steps are exact (Sterbenz, and both operands on a
     * common grid); the later ones are exact whenever r is small, where it matters. */
    float r = xc - kf * CLNET_PIO2_1;
    r = r - kf * CLNET_PIO2_2;
    r = r - kf * CLNET_PIO2_3;
    r = r - kf * CLNET_PIO2_4;
    r = r - kf * CLNET_PIO2_5;
    const float t = r * r;
    float sp = CLNET_SIN_S3;
    sp = sp * t + CLNET_SIN_S2;
    sp = sp * t + CLNET_SIN_S1;
    sp = sp * t + CLNET_SIN_S0;
    const float sn = r + r * t * sp;
    float cp = CLNET_COS_C2;
    cp = cp * t + CLNET_COS_C1;
    cp = cp * t + CLNET_COS_C0;
    const float cs = (1.0f - 0.5f * t) + t * t * cp;
    const float y = (k & 1) ? cs : sn;
    const float ys = (k & 2) ? -y : y;
    /* sin(x) rounds to x for |x| < 2^-12: keeps -0 and makes subnormals exact. */
    return fabs(x) < 0x1p-12f ? x : (fabs(x) <= CLNET_SINF_REDUCED_MAX ? ys : x - x);
}

/* True where clnet_sinf_reduced(x) is not sin(x): finite |x| > CLNET_SINF_REDUCED_MAX. */
inline int clnet_sinf_needs_builtin(float x)
{
    return fabs(x) > CLNET_SINF_REDUCED_MAX && fabs(x) < INFINITY;
}

/* sin(x) over the whole float range. The branch makes it unsuitable inside a loop meant
 * to vectorise: there use clnet_sinf_reduced and fix up with clnet_sinf_needs_builtin. */
inline float clnet_sinf(float x)
{
    return clnet_sinf_needs_builtin(x) ? sin(x) : clnet_sinf_reduced(x);
}
