#ifndef FLOE_CLIBCRYPTO_SHIM_H
#define FLOE_CLIBCRYPTO_SHIM_H
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

/* One-shot digests through EVP (the low-level SHA256()/MD5() calls are deprecated in OpenSSL 3).
   `out` must hold 32 bytes for SHA-256 and 16 for MD5. Return 1 on success. */
static inline int floe_sha256(const void *data, size_t length, uint8_t *out) {
    unsigned int size = 0;
    return EVP_Digest(data, length, out, &size, EVP_sha256(), NULL);
}

static inline int floe_md5(const void *data, size_t length, uint8_t *out) {
    unsigned int size = 0;
    return EVP_Digest(data, length, out, &size, EVP_md5(), NULL);
}
#endif
