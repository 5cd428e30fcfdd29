#include "floe_crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

/* Slicing-by-8 tables for the portable path. */
static uint32_t slice_table[8][256];

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
#include <nmmintrin.h>
#define FLOE_CRC32C_X86 1

/* Interleaving three independent crc32 streams hides the instruction's 3-cycle latency.
 * The streams are joined by "shifting" a CRC over the length of the streams that follow
 * it, which is a linear map applied through these byte-indexed tables. */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];
static int hardware_ok;
#endif

/* GF(2) 32x32 matrices stored as 32 columns: column n is the image of bit n. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_compose(uint32_t *dst, const uint32_t *outer, const uint32_t *inner) {
    uint32_t tmp[32];
    for (int n = 0; n < 32; n++) tmp[n] = gf2_times(outer, inner[n]);
    memcpy(dst, tmp, sizeof(tmp));
}

/* Table form of the operator that advances a raw CRC register over `len` zero bytes. */
static void make_shift_table(uint32_t table[4][256], size_t len) {
    uint32_t op[32], result[32];
    /* One zero bit: the register shifts right and folds the polynomial in when bit 0 was set. */
    op[0] = POLY;
    for (int n = 1; n < 32; n++) op[n] = 1u << (n - 1);
    for (int k = 0; k < 3; k++) gf2_compose(op, op, op); /* 8 bits = one byte */
    for (int n = 0; n < 32; n++) result[n] = 1u << n;
    while (len) {
        if (len & 1) gf2_compose(result, op, result);
        len >>= 1;
        if (len) gf2_compose(op, op, op);
    }
    for (int k = 0; k < 4; k++)
        for (uint32_t i = 0; i < 256; i++) table[k][i] = gf2_times(result, i << (8 * k));
}

static void init_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (POLY & (0u - (crc & 1u)));
        slice_table[0][i] = crc;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = slice_table[0][i];
        for (int k = 1; k < 8; k++) {
            crc = slice_table[0][crc & 0xFF] ^ (crc >> 8);
            slice_table[k][i] = crc;
        }
    }
#ifdef FLOE_CRC32C_X86
    make_shift_table(shift_long, LONG_BLOCK);
    make_shift_table(shift_short, SHORT_BLOCK);
    __builtin_cpu_init();
    hardware_ok = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v)); /* unaligned-safe; compiles to a plain load */
    return v;
}

static uint32_t portable_raw(uint32_t crc, const uint8_t *p, size_t length) {
    while (length && ((uintptr_t)p & 7)) {
        crc = slice_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        length--;
    }
    while (length >= 8) {
        /* The tables assume little-endian word order, true on every target this builds for. */
        uint64_t word = load64(p) ^ crc;
        crc = slice_table[7][word & 0xFF] ^ slice_table[6][(word >> 8) & 0xFF] ^
              slice_table[5][(word >> 16) & 0xFF] ^ slice_table[4][(word >> 24) & 0xFF] ^
              slice_table[3][(word >> 32) & 0xFF] ^ slice_table[2][(word >> 40) & 0xFF] ^
              slice_table[1][(word >> 48) & 0xFF] ^ slice_table[0][word >> 56];
        p += 8;
        length -= 8;
    }
    while (length--) crc = slice_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

uint32_t floe_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    pthread_once(&tables_once, init_tables);
    if (length == 0) return crc;
    return ~portable_raw(~crc, data, length);
}

#ifdef FLOE_CRC32C_X86
static inline uint32_t shift_crc(uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xFF] ^ table[1][(crc >> 8) & 0xFF] ^ table[2][(crc >> 16) & 0xFF] ^
           table[3][crc >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t hardware_raw(uint32_t crc, const uint8_t *p, size_t length) {
    uint64_t crc0 = crc;
    while (length && ((uintptr_t)p & 7)) {
        crc0 = _mm_crc32_u8((uint32_t)crc0, *p++);
        length--;
    }
    while (length >= 3 * LONG_BLOCK) {
        uint64_t crc1 = 0, crc2 = 0;
        const uint8_t *end = p + LONG_BLOCK;
        do {
            crc0 = _mm_crc32_u64(crc0, load64(p));
            crc1 = _mm_crc32_u64(crc1, load64(p + LONG_BLOCK));
            crc2 = _mm_crc32_u64(crc2, load64(p + 2 * LONG_BLOCK));
            p += 8;
        } while (p < end);
        crc0 = shift_crc(shift_long, (uint32_t)crc0) ^ (uint32_t)crc1;
        crc0 = shift_crc(shift_long, (uint32_t)crc0) ^ (uint32_t)crc2;
        p += 2 * LONG_BLOCK;
        length -= 3 * LONG_BLOCK;
    }
    while (length >= 3 * SHORT_BLOCK) {
        uint64_t crc1 = 0, crc2 = 0;
        const uint8_t *end = p + SHORT_BLOCK;
        do {
            crc0 = _mm_crc32_u64(crc0, load64(p));
            crc1 = _mm_crc32_u64(crc1, load64(p + SHORT_BLOCK));
            crc2 = _mm_crc32_u64(crc2, load64(p + 2 * SHORT_BLOCK));
            p += 8;
        } while (p < end);
        crc0 = shift_crc(shift_short, (uint32_t)crc0) ^ (uint32_t)crc1;
        crc0 = shift_crc(shift_short, (uint32_t)crc0) ^ (uint32_t)crc2;
        p += 2 * SHORT_BLOCK;
        length -= 3 * SHORT_BLOCK;
    }
    while (length >= 8) {
        crc0 = _mm_crc32_u64(crc0, load64(p));
        p += 8;
        length -= 8;
    }
    while (length--) crc0 = _mm_crc32_u8((uint32_t)crc0, *p++);
    return (uint32_t)crc0;
}
#endif

uint32_t floe_crc32c_hardware(uint32_t crc, const void *data, size_t length) {
    pthread_once(&tables_once, init_tables);
    if (length == 0) return crc;
#ifdef FLOE_CRC32C_X86
    if (hardware_ok) return ~hardware_raw(~crc, data, length);
#endif
    return ~portable_raw(~crc, data, length);
}

int floe_crc32c_hardware_available(void) {
    pthread_once(&tables_once, init_tables);
#ifdef FLOE_CRC32C_X86
    return hardware_ok;
#else
    return 0;
#endif
}

uint32_t floe_crc32c(uint32_t crc, const void *data, size_t length) {
    return floe_crc32c_hardware(crc, data, length);
}
