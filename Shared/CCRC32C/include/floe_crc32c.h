#ifndef FLOE_CRC32C_H
#define FLOE_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
 * `crc` is the running value: 0 to start, or the result of a previous call to continue
 * over the next chunk. Uses the SSE4.2 crc32 instruction when the CPU has it. */
uint32_t floe_crc32c(uint32_t crc, const void *data, size_t length);

/* The table-driven (slicing-by-8) implementation, always available. */
uint32_t floe_crc32c_portable(uint32_t crc, const void *data, size_t length);

/* The hardware implementation; falls back to the portable one when the CPU lacks it. */
uint32_t floe_crc32c_hardware(uint32_t crc, const void *data, size_t length);

/* 1 when floe_crc32c_hardware really uses CPU instructions, 0 otherwise. */
int floe_crc32c_hardware_available(void);

#endif
