/*
 * auth.c - what a client proves to switchyard itself: the SCRAM-SHA-256 verifiers of the
 * configured secrets (a listener's auth_password, admin_password), server nonces, and the
 * back-off after failed attempts.
 *
 * A verifier costs a PBKDF2 of 4096 rounds (about a millisecond): it is derived once per
 * secret, with a random salt, and kept in a small process-wide table keyed by the
 * secret's SHA-256 (so a RELOAD that changes a secret gets a new one, and the table holds
 * no plaintext). Postgres does the same once, when the password is set.
 *
 * Back-off, as Postgres's auth_delay but growing: each failed attempt within a minute of
 * the previous one doubles the wait before the client hears "password authentication
 * failed" (250 ms, 500 ms, ... at most 5 s). The wait holds only the failing connection;
 * a client that knows the secret is never delayed. Guessing is then bound by max_clients
 * connections per wait.
 */
#include <pthread.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include "proxy/core/sy.h"

#define VERIFIERS 16

static struct {
    pthread_mutex_t     lock;
    struct { uint8_t key[SHA256_DIGEST_LENGTH]; pg_scram_verifier_t v; int used; uint64_t seq; } slot[VERIFIERS];
    uint64_t            seq;
    uint32_t            fails;
    uint64_t            last_fail_ms;
} auth = { .lock = PTHREAD_MUTEX_INITIALIZER };

int sy_scram_verifier(const char *secret, pg_scram_verifier_t *out)
{
    uint8_t key[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)secret, strlen(secret), key);
    int rc = 0;
    pthread_mutex_lock(&auth.lock);
    int free_at = -1, oldest = 0;
    for (int i = 0; i < VERIFIERS; i++) {
        if (auth.slot[i].used && CRYPTO_memcmp(auth.slot[i].key, key, sizeof(key)) == 0) {
            *out = auth.slot[i].v;
            pthread_mutex_unlock(&auth.lock);
            return 0;
        }
        if (!auth.slot[i].used && free_at < 0)
            free_at = i;
        if (auth.slot[i].seq < auth.slot[oldest].seq)
            oldest = i;
    }
    int i = free_at >= 0 ? free_at : oldest;
    uint8_t salt[PG_SCRAM_SALT_LEN];
    if (RAND_bytes(salt, sizeof(salt)) != 1 || pg_scram_verifier(secret, salt, PG_SCRAM_ITERATIONS, out) != 0) {
        rc = -1;
    } else {
        memcpy(auth.slot[i].key, key, sizeof(key));
        auth.slot[i].v = *out;
        auth.slot[i].used = 1;
        auth.slot[i].seq = ++auth.seq;
    }
    pthread_mutex_unlock(&auth.lock);
    return rc;
}

int sy_scram_nonce(char out[PG_SCRAM_NONCE_LEN + 1])
{
    uint8_t raw[PG_SCRAM_NONCE_LEN / 4 * 3];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof(raw));
    return 0;
}

uint64_t sy_auth_failed(uint64_t now_ms)
{
    pthread_mutex_lock(&auth.lock);
    if (auth.fails > 0 && now_ms - auth.last_fail_ms > 60000)
        auth.fails = 0;
    auth.fails++;
    auth.last_fail_ms = now_ms;
    uint32_t n = auth.fails;
    pthread_mutex_unlock(&auth.lock);
    uint64_t ms = 250ull << (n - 1 < 5 ? n - 1 : 5);
    return ms < 5000 ? ms : 5000;
}
