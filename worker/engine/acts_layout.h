/*
 * acts_layout.h: the float buffers of the model's activations in arena order, one list for both
 * backends (model_cpu.c's Activations, cuda/engine.cu's DevActs), so that a buffer the model
 * gains is added once. TAKE(field, floats) is the caller's: it points field into the arena and
 * advances the offset. The sizes read the caller's size_t locals: B (rows), S (sequence), N
 * (image tokens), P (floats per patch), d, F (MLP width), H (heads), BSd (B * S * d) and big
 * (the larger of 3d and F).
 */
#ifndef CHUNKGRPO_ACTS_LAYOUT_H
#define CHUNKGRPO_ACTS_LAYOUT_H

/* clang-format would read the sizes' products as pointer declarations */
// clang-format off

/* What the forward keeps before the blocks: patches, time and text conditioning. */
#define ACTS_TAKE_CONDITIONING(TAKE, a)                                                            \
    do {                                                                                           \
        TAKE((a)->patches, B * N * P);                                                             \
        TAKE((a)->tfreq, B * MODEL_TIME_FREQ_DIM);                                                 \
        TAKE((a)->t1, B * d);                                                                      \
        TAKE((a)->t1s, B * d);                                                                     \
        TAKE((a)->pooled_mean, B * d);                                                             \
        TAKE((a)->c, B * d);                                                                       \
        TAKE((a)->sc, B * d);                                                                      \
    } while (0)

/* What the forward keeps of one transformer block. */
#define ACTS_TAKE_BLOCK(TAKE, k)                                                                   \
    do {                                                                                           \
        TAKE((k)->h_in, BSd);                                                                      \
        TAKE((k)->mod, 6 * d * B);                                                                 \
        TAKE((k)->ln1_mean, B * S);                                                                \
        TAKE((k)->ln1_rstd, B * S);                                                                \
        TAKE((k)->a, BSd);                                                                         \
        TAKE((k)->qkv, 3 * BSd);                                                                   \
        TAKE((k)->q_rstd, B * S * H);                                                              \
        TAKE((k)->k_rstd, B * S * H);                                                              \
        TAKE((k)->qh, BSd);                                                                        \
        TAKE((k)->kh, BSd);                                                                        \
        TAKE((k)->vh, BSd);                                                                        \
        TAKE((k)->att, B * H * S * S);                                                             \
        TAKE((k)->attn, BSd);                                                                      \
        TAKE((k)->proj, BSd);                                                                      \
        TAKE((k)->h_mid, BSd);                                                                     \
        TAKE((k)->mlp_in, BSd);                                                                    \
        TAKE((k)->ln2_mean, B * S);                                                                \
        TAKE((k)->ln2_rstd, B * S);                                                                \
        TAKE((k)->fc1, B * S * F);                                                                 \
        TAKE((k)->gelu, B * S * F);                                                                \
        TAKE((k)->fc2, BSd);                                                                       \
    } while (0)

/* The final layer's forward buffers, then the backward's. */
#define ACTS_TAKE_FINAL_AND_GRADIENTS(TAKE, a)                                                     \
    do {                                                                                           \
        TAKE((a)->h_last, BSd);                                                                    \
        TAKE((a)->fmod, 2 * B * d);                                                                \
        TAKE((a)->lnf_mean, B * N);                                                                \
        TAKE((a)->lnf_rstd, B * N);                                                                \
        TAKE((a)->fin_in, B * N * d);                                                              \
        TAKE((a)->out, B * N * P);                                                                 \
        TAKE((a)->d_out, B * N * P);                                                               \
        TAKE((a)->d_h, BSd);                                                                       \
        TAKE((a)->d_x, BSd);                                                                       \
        TAKE((a)->d_big, B * S * big);                                                             \
        TAKE((a)->d_qh, BSd);                                                                      \
        TAKE((a)->d_kh, BSd);                                                                      \
        TAKE((a)->d_vh, BSd);                                                                      \
        TAKE((a)->d_mod, 6 * B * d);                                                               \
        TAKE((a)->d_sc, B * d);                                                                    \
        TAKE((a)->d_c, B * d);                                                                     \
        TAKE((a)->d_vec, B * d);                                                                   \
    } while (0)

// clang-format on

#endif
