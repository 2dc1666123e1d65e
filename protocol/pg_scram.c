/*
 * pg_scram.c - the server side of SCRAM-SHA-256; see pg_scram.h.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "protocol/pg_scram.h"

static const char MECHANISM[] = "SCRAM-SHA-256";

static int hmac(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t out[PG_SCRAM_KEY_LEN])
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n) != NULL && n == PG_SCRAM_KEY_LEN ? 0 : -1;
}

int pg_scram_verifier(const char *secret, const uint8_t *salt, uint32_t iterations, pg_scram_verifier_t *out)
{
    uint8_t salted[PG_SCRAM_KEY_LEN], client_key[PG_SCRAM_KEY_LEN];
    /* Postgres runs the password through SASLprep first; for the ASCII secrets of a
     * config file that is the identity. */
    if (iterations == 0 || PKCS5_PBKDF2_HMAC(secret, (int)strlen(secret), salt, PG_SCRAM_SALT_LEN, (int)iterations,
                                             EVP_sha256(), PG_SCRAM_KEY_LEN, salted) != 1)
        return -1;
    memcpy(out->salt, salt, PG_SCRAM_SALT_LEN);
    out->iterations = iterations;
    int rc = hmac(salted, sizeof(salted), "Client Key", 10, client_key);
    if (rc == 0)
        rc = SHA256(client_key, sizeof(client_key), out->stored_key) != NULL ? 0 : -1;
    if (rc == 0)
        rc = hmac(salted, sizeof(salted), "Server Key", 10, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

/* Standard base64 of exactly one value: length a multiple of 4, padding only at the end.
 * Returns the decoded length, or -1. */
static int b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > cap)
        return -1;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
        if (c == '=' && i >= len - 2) {
            pad++;
            continue;
        }
        if (!ok || pad > 0)
            return -1;
    }
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    return n < 0 ? -1 : n - (int)pad;
}

static size_t b64_encode(const uint8_t *in, size_t len, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* A SCRAM nonce: printable ASCII other than ','. */
static int nonce_ok(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return 0;
    return 1;
}

/* Copy a client message into a NUL-terminated buffer; no NUL inside, at most the max. */
static int take_text(const uint8_t *data, size_t len, char *buf)
{
    if (len == 0 || len > PG_SCRAM_MSG_MAX || memchr(data, '\0', len) != NULL)
        return -1;
    memcpy(buf, data, len);
    buf[len] = '\0';
    return 0;
}

static int malformed(pg_scram_t *x, const char *why)
{
    x->err = why;
    return PG_SCRAM_MALFORMED;
}

/* "k=" at p: the value up to the next ',' or the end. */
static const char *attr(const char *p, char k, size_t *vlen)
{
    if (p[0] != k || p[1] != '=')
        return NULL;
    const char *v = p + 2, *e = strchr(v, ',');
    *vlen = e ? (size_t)(e - v) : strlen(v);
    return v;
}

int pg_scram_first(pg_scram_t *x, const pg_scram_verifier_t *v, const uint8_t *body, size_t len,
                   const char *server_nonce, char *out, size_t outcap, size_t *outlen)
{
    char msg[PG_SCRAM_MSG_MAX + 1];
    x->err = NULL;
    if (x->step != 0)
        return malformed(x, "unexpected SASLInitialResponse");
    const uint8_t *nul = memchr(body, '\0', len);
    if (nul == NULL)
        return malformed(x, "malformed SASLInitialResponse");
    if ((size_t)(nul - body) != sizeof(MECHANISM) - 1 || memcmp(body, MECHANISM, sizeof(MECHANISM) - 1) != 0)
        return malformed(x, "client selected an invalid SASL authentication mechanism");
    size_t off = (size_t)(nul - body) + 1;
    if (len - off < 4)
        return malformed(x, "malformed SASLInitialResponse");
    uint32_t dlen = (uint32_t)body[off] << 24 | (uint32_t)body[off + 1] << 16 | (uint32_t)body[off + 2] << 8 | body[off + 3];
    off += 4;
    if (dlen == 0xffffffffu || dlen != len - off || take_text(body + off, dlen, msg) != 0)
        return malformed(x, "malformed SCRAM message");
    /* gs2-header: "n,," (no channel binding) or "y,," (the client could, we did not offer). */
    if (msg[0] == 'p')
        return malformed(x, "channel binding was not offered");
    if ((msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',')
        return malformed(x, "malformed SCRAM message: unexpected channel-binding flag");
    if (msg[2] == 'a')
        return malformed(x, "client uses authorization identity, but it is not supported");
    if (msg[2] != ',')
        return malformed(x, "malformed SCRAM message: unexpected attribute in client-first-message");
    const char *bare = msg + 3;
    if (bare[0] == 'm' && bare[1] == '=')
        return malformed(x, "client requires an unsupported SCRAM extension");
    size_t ulen, nlen;
    const char *user = attr(bare, 'n', &ulen), *nonce;
    if (user == NULL || user[ulen] != ',' || (nonce = attr(user + ulen + 1, 'r', &nlen)) == NULL ||
        !nonce_ok(nonce, nlen))
        return malformed(x, "malformed SCRAM message: no user or nonce");
    size_t snlen = strlen(server_nonce);
    if (!nonce_ok(server_nonce, snlen) || nlen + snlen >= sizeof(x->nonce))
        return malformed(x, "malformed SCRAM message: nonce too long");
    memcpy(x->gs2, msg, 3);
    x->gs2[3] = '\0';
    memcpy(x->nonce, nonce, nlen);
    memcpy(x->nonce + nlen, server_nonce, snlen + 1);
    memcpy(x->client_first_bare, bare, strlen(bare) + 1);
    char salt[PG_SCRAM_SALT_LEN * 2];
    b64_encode(v->salt, PG_SCRAM_SALT_LEN, salt);
    int n = snprintf(x->server_first, sizeof(x->server_first), "r=%s,s=%s,i=%u", x->nonce, salt, v->iterations);
    if (n < 0 || (size_t)n >= sizeof(x->server_first) || (size_t)n >= outcap)
        return malformed(x, "SCRAM message too long");
    memcpy(out, x->server_first, (size_t)n + 1);
    *outlen = (size_t)n;
    x->step = 1;
    return PG_SCRAM_OK;
}

int pg_scram_final(pg_scram_t *x, const pg_scram_verifier_t *v, const uint8_t *body, size_t len,
                   char *out, size_t outcap, size_t *outlen)
{
    char msg[PG_SCRAM_MSG_MAX + 1];
    uint8_t cb[16], proof[PG_SCRAM_KEY_LEN + 3];
    x->err = NULL;
    if (x->step != 1)
        return malformed(x, "unexpected SASLResponse");
    x->step = 2;
    if (take_text(body, len, msg) != 0)
        return malformed(x, "malformed SCRAM message");
    size_t clen, nlen, plen;
    const char *c = attr(msg, 'c', &clen);
    if (c == NULL || c[clen] != ',')
        return malformed(x, "malformed SCRAM message: no channel binding");
    int cbn = b64_decode(c, clen, cb, sizeof(cb));
    if (cbn != 3 || memcmp(cb, x->gs2, 3) != 0)
        return malformed(x, "SCRAM channel binding check failed");
    const char *r = attr(c + clen + 1, 'r', &nlen);
    if (r == NULL || nlen != strlen(x->nonce) || memcmp(r, x->nonce, nlen) != 0)
        return malformed(x, "SCRAM nonce mismatch");
    /* Extensions may follow; the proof is the last attribute. */
    const char *p = strstr(r + nlen, ",p=");
    if (p == NULL || strchr(p + 3, ',') != NULL)
        return malformed(x, "malformed SCRAM message: no proof");
    plen = strlen(p + 3);
    if (b64_decode(p + 3, plen, proof, sizeof(proof)) != (int)PG_SCRAM_KEY_LEN)
        return malformed(x, "malformed SCRAM message: bad proof");

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    char auth[sizeof(x->client_first_bare) + sizeof(x->server_first) + sizeof(msg) + 2];
    size_t wp = (size_t)(p - msg);
    int an = snprintf(auth, sizeof(auth), "%s,%s,%.*s", x->client_first_bare, x->server_first, (int)wp, msg);
    if (an < 0 || (size_t)an >= sizeof(auth))
        return malformed(x, "SCRAM message too long");
    uint8_t sig[PG_SCRAM_KEY_LEN], key[PG_SCRAM_KEY_LEN], stored[PG_SCRAM_KEY_LEN];
    if (hmac(v->stored_key, PG_SCRAM_KEY_LEN, auth, (size_t)an, sig) != 0)
        return malformed(x, "SCRAM: cannot compute the signature");
    for (size_t i = 0; i < PG_SCRAM_KEY_LEN; i++)
        key[i] = proof[i] ^ sig[i];
    int ok = SHA256(key, sizeof(key), stored) != NULL && CRYPTO_memcmp(stored, v->stored_key, PG_SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok)
        return PG_SCRAM_WRONG;
    if (hmac(v->server_key, PG_SCRAM_KEY_LEN, auth, (size_t)an, sig) != 0 || outcap < 3 + 48)
        return malformed(x, "SCRAM: cannot compute the server signature");
    memcpy(out, "v=", 2);
    *outlen = 2 + b64_encode(sig, sizeof(sig), out + 2);
    return PG_SCRAM_OK;
}

static size_t build_auth(uint8_t *out, size_t cap, uint32_t code, const void *data, size_t len)
{
    size_t total = 1 + 4 + 4 + len;
    if (total > cap || len > 0x7fffff00u)
        return 0;
    uint32_t ml = (uint32_t)(total - 1);
    out[0] = 'R';
    out[1] = (uint8_t)(ml >> 24), out[2] = (uint8_t)(ml >> 16), out[3] = (uint8_t)(ml >> 8), out[4] = (uint8_t)ml;
    out[5] = 0, out[6] = 0, out[7] = 0, out[8] = (uint8_t)code;
    if (len > 0)
        memcpy(out + 9, data, len);
    return total;
}

size_t pg_scram_build_sasl(uint8_t *out, size_t cap)
{
    static const char list[] = "SCRAM-SHA-256\0";   /* one mechanism, then the empty name */
    return build_auth(out, cap, 10, list, sizeof(list));
}

size_t pg_scram_build_continue(uint8_t *out, size_t cap, const char *data, size_t len)
{
    return build_auth(out, cap, 11, data, len);
}

size_t pg_scram_build_final(uint8_t *out, size_t cap, const char *data, size_t len)
{
    return build_auth(out, cap, 12, data, len);
}
