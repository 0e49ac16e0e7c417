/* Activation and aggregation functions of the feed-forward kernels.
 * The ids must equal the positions in clnet/functions.py (checked by a test). */
#pragma once
#include "clnet_common.h"
#include "clnet_math.h"

/* The math the activations use. Float builds use the vectorisable versions of
 * clnet_math.h (PoCL's float log, log1p, expm1 and sin are scalar library calls per
 * lane); double builds keep the builtins. */
#ifdef CLNET_USE_DOUBLE
#define CLNET_LOG(z) log(z)
#define CLNET_LOG1P(z) log1p(z)
#define CLNET_EXPM1(z) expm1(z)
#define CLNET_SIN(z) sin(z)
#define CLNET_SIN_REDUCED(z) sin(z)
#define CLNET_SIN_NEEDS_BUILTIN(z) 0
#define CLNET_SIGMOID(z) clnet_sigmoid(z)
#define CLNET_SIGMOID_CLAMPED(z) clnet_sigmoid(z)
#else
#define CLNET_SIGMOID(z) clnet_sigmoidf(z)
/* z within [-88, 88] or NaN */
#define CLNET_SIGMOID_CLAMPED(z) clnet_sigmoid_boundedf(z)
#define CLNET_LOG(z) clnet_logf(z)
#define CLNET_LOG1P(z) clnet_log1pf(z)
#define CLNET_EXPM1(z) clnet_expm1f(z)
#define CLNET_SIN(z) clnet_sinf(z)
#define CLNET_SIN_REDUCED(z) clnet_sinf_reduced(z)
#define CLNET_SIN_NEEDS_BUILTIN(z) clnet_sinf_needs_builtin(z)
#endif

#define CLNET_ACT_IDENTITY 0
#define CLNET_ACT_RELU 1
#define CLNET_ACT_SIGMOID 2
#define CLNET_ACT_TANH 3
#define CLNET_ACT_SOFTPLUS 4
#define CLNET_ACT_ELU 5
#define CLNET_ACT_SELU 6
#define CLNET_ACT_SIN 7
#define CLNET_ACT_GAUSS 8
#define CLNET_ACT_ABS 9
#define CLNET_ACT_SQUARE 10
#define CLNET_ACT_CUBE 11
#define CLNET_ACT_CLAMPED 12
#define CLNET_ACT_EXP 13
#define CLNET_ACT_LOG 14
#define CLNET_ACT_INV 15
#define CLNET_ACT_HAT 16
#define CLNET_ACT_LELU 17
#define CLNET_ACT_NEAT_SIGMOID 18
#define CLNET_ACT_NEAT_TANH 19
#define CLNET_ACT_NEAT_SIN 20
#define CLNET_ACT_NEAT_GAUSS 21
#define CLNET_ACT_NEAT_SOFTPLUS 22
#define CLNET_ACT_NEAT_EXP 23
#define CLNET_ACT_NEAT_LOG 24
#define CLNET_ACT_NEAT_INV 25

#define CLNET_AGG_SUM 0
#define CLNET_AGG_PRODUCT 1
#define CLNET_AGG_MAX 2
#define CLNET_AGG_MIN 3
#define CLNET_AGG_MAXABS 4
#define CLNET_AGG_MEAN 5
#define CLNET_AGG_MEDIAN 6

#define CLNET_SELU_LAMBDA ((real)1.0507009873554804934193349852946)
#define CLNET_SELU_ALPHA ((real)1.6732632423543772848170429916717)

inline real clnet_activate(int act, real z)
{
    switch (act) {
    case CLNET_ACT_IDENTITY: return z;
    case CLNET_ACT_RELU: return z > (real)0 ? z : (real)0;
    case CLNET_ACT_SIGMOID: return CLNET_SIGMOID(z);
    case CLNET_ACT_TANH: return tanh(z);
    /* max(z, 0) + log1p(exp(-|z|)) is exact in both tails, unlike log(1 + exp(z)). */
    case CLNET_ACT_SOFTPLUS: return (z > (real)0 ? z : (real)0) + CLNET_LOG1P(exp(-fabs(z)));
    case CLNET_ACT_ELU: return z > (real)0 ? z : CLNET_EXPM1(z);
    case CLNET_ACT_SELU: return z > (real)0 ? CLNET_SELU_LAMBDA * z : CLNET_SELU_LAMBDA * CLNET_SELU_ALPHA * CLNET_EXPM1(z);
    case CLNET_ACT_SIN: return CLNET_SIN(z);
    case CLNET_ACT_GAUSS: return exp(-z * z);
    case CLNET_ACT_ABS: return fabs(z);
    case CLNET_ACT_SQUARE: return z * z;
    case CLNET_ACT_CUBE: return z * z * z;
    case CLNET_ACT_CLAMPED: return clnet_clamp(z, (real)-1, (real)1);
    case CLNET_ACT_EXP: return exp(z);
    case CLNET_ACT_LOG: return CLNET_LOG(z);
    case CLNET_ACT_INV: return (real)1 / z;
    case CLNET_ACT_HAT: { real t = (real)1 - fabs(z); return t > (real)0 ? t : (real)0; }
    case CLNET_ACT_LELU: return z > (real)0 ? z : (real)0.005 * z;
    case CLNET_ACT_NEAT_SIGMOID: return CLNET_SIGMOID_CLAMPED(clnet_clamp((real)5 * z, (real)-60, (real)60));
    case CLNET_ACT_NEAT_TANH: return tanh(clnet_clamp((real)2.5 * z, (real)-60, (real)60));
    case CLNET_ACT_NEAT_SIN: return CLNET_SIN_REDUCED(clnet_clamp((real)5 * z, (real)-60, (real)60)); /* |arg| <= 60 */
    case CLNET_ACT_NEAT_GAUSS: { real t = clnet_clamp(z, (real)-3.4, (real)3.4); return exp((real)-5 * t * t); }
    case CLNET_ACT_NEAT_SOFTPLUS: return (real)0.2 * CLNET_LOG((real)1 + exp(clnet_clamp((real)5 * z, (real)-60, (real)60)));
    case CLNET_ACT_NEAT_EXP: return exp(clnet_clamp(z, (real)-60, (real)60));
    case CLNET_ACT_NEAT_LOG: return CLNET_LOG(z < (real)1e-7 ? (real)1e-7 : z);
    /* neat-python returns 0 where 1/z raises ZeroDivisionError. */
    case CLNET_ACT_NEAT_INV: return z == (real)0 ? (real)0 : (real)1 / z;
    default: return NAN;
    }
}


/* For loops over lanes that must vectorise: clnet_activate without its one branch
 * (sin of huge arguments). Lanes where clnet_activate_needs_builtin() is true get a
 * placeholder and must be recomputed with clnet_activate afterwards. */
inline real clnet_activate_vectorisable(int act, real z)
{
    return act == CLNET_ACT_SIN ? CLNET_SIN_REDUCED(z) : clnet_activate(act, z);
}

inline int clnet_activate_needs_builtin(int act, real z)
{
    return act == CLNET_ACT_SIN && CLNET_SIN_NEEDS_BUILTIN(z);
}
