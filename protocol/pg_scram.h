/*
 * pg_scram.h - the server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres speaks it,
 * for a client that authenticates to switchyard itself (a listener's auth_password, the
 * console's admin_password).
 *
 *   server                                   client
 *   AuthenticationSASL "SCRAM-SHA-256"  ──▶
 *                                       ◀──  SASLInitialResponse: mechanism, client-first
 *   AuthenticationSASLContinue          ──▶  (pg_scram_first: server-first)
 *                                       ◀──  SASLResponse: client-final (proof)
 *   AuthenticationSASLFinal (v=...)     ──▶  (pg_scram_final: verified, server-final)
 *   AuthenticationOk ...
 *
 * As Postgres (auth-scram.c): the user name in client-first is ignored (the startup
 * packet's counts), an authzid is refused, channel binding is not offered (so the gs2
 * header is "n,," or "y,,", and c= must repeat it exactly), and the verifier is derived
 * from the plaintext secret once, with a salt and iteration count of our choosing.
 *
 * Pure apart from libcrypto's hashes: no allocation, no I/O, no randomness (the caller
 * gives the server nonce). Every length is checked against the fixed buffers here.
 */
#ifndef SY_PG_SCRAM_H
#define SY_PG_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#define PG_SCRAM_KEY_LEN     32u      /* SHA-256 */
#define PG_SCRAM_SALT_LEN    16u      /* as Postgres's SCRAM_DEFAULT_SALT_LEN */
#define PG_SCRAM_ITERATIONS  4096u    /* as Postgres's scram_iterations default */
#define PG_SCRAM_NONCE_LEN   24u      /* base64 of 18 random bytes, as Postgres */
#define PG_SCRAM_MSG_MAX     1024u    /* largest client message accepted */

typedef struct pg_scram_verifier_s {
    uint8_t  salt[PG_SCRAM_SALT_LEN];
    uint32_t iterations;
    uint8_t  stored_key[PG_SCRAM_KEY_LEN];
    uint8_t  server_key[PG_SCRAM_KEY_LEN];
} pg_scram_verifier_t;

typedef struct pg_scram_s {
    int    step;                               /* 0: want client-first, 1: want final, 2: done */
    char   gs2[4];                             /* "n,," or "y,," */
    char   nonce[2 * PG_SCRAM_MSG_MAX + 1];    /* client nonce + server nonce */
    char   client_first_bare[PG_SCRAM_MSG_MAX + 1];
    char   server_first[PG_SCRAM_MSG_MAX + 128];
    const char *err;                           /* why the last call failed */
} pg_scram_t;

enum { PG_SCRAM_OK = 0, PG_SCRAM_MALFORMED = -1, PG_SCRAM_WRONG = -2 };

/* The verifier for a plaintext secret with this salt (PG_SCRAM_SALT_LEN bytes) and
 * iteration count. Returns 0, or -1 if libcrypto fails. */
int pg_scram_verifier(const char *secret, const uint8_t *salt, uint32_t iterations, pg_scram_verifier_t *out);

/* The client's SASLInitialResponse body (mechanism NUL, int32 length, client-first). With
 * server_nonce (PG_SCRAM_NONCE_LEN printable characters, no ','), writes server-first to
 * out (NUL-terminated, *outlen without the NUL). PG_SCRAM_OK or PG_SCRAM_MALFORMED (x->err
 * says why; an unsupported mechanism is malformed too). */
int pg_scram_first(pg_scram_t *x, const pg_scram_verifier_t *v, const uint8_t *body, size_t len,
                   const char *server_nonce, char *out, size_t outcap, size_t *outlen);

/* The client's SASLResponse body (client-final). PG_SCRAM_OK with server-final (v=...) in
 * out when the proof is right, PG_SCRAM_WRONG when it is not (compared in constant time),
 * PG_SCRAM_MALFORMED otherwise. */
int pg_scram_final(pg_scram_t *x, const pg_scram_verifier_t *v, const uint8_t *body, size_t len,
                   char *out, size_t outcap, size_t *outlen);

/* Authentication request messages, whole (type, length, code, data). 0 if cap is short. */
size_t pg_scram_build_sasl(uint8_t *out, size_t cap);
size_t pg_scram_build_continue(uint8_t *out, size_t cap, const char *data, size_t len);
size_t pg_scram_build_final(uint8_t *out, size_t cap, const char *data, size_t len);

#endif /* SY_PG_SCRAM_H */
