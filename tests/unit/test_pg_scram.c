/*
 * test_pg_scram.c - the server side of SCRAM-SHA-256: RFC 7677's worked example, a wrong
 * proof, and every malformed shape of the two client messages.
 */
#include <openssl/evp.h>

#include "protocol/pg_scram.h"
#include "tests/unit/unit.h"

#define CNONCE "rOprNGfwEbeRWgbNEkqO"
#define SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define FINAL_NO_PROOF "c=biws,r=" CNONCE SNONCE
#define PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="

static pg_scram_verifier_t rfc_verifier(void)
{
    uint8_t salt[PG_SCRAM_SALT_LEN];
    pg_scram_verifier_t v;
    CHECK(EVP_DecodeBlock(salt, (const unsigned char *)"W22ZaJ0SNY7soEsUEjb6gQ==", 24) == 18);
    CHECK(pg_scram_verifier("pencil", salt, 4096, &v) == 0);
    return v;
}

/* A SASLInitialResponse body: mechanism NUL, int32 length, data. */
static size_t initial(uint8_t *out, const char *mech, const char *data, long len_field)
{
    size_t m = strlen(mech) + 1, d = strlen(data);
    memcpy(out, mech, m);
    uint32_t l = len_field == -2 ? (uint32_t)d : (uint32_t)len_field;
    out[m] = (uint8_t)(l >> 24), out[m + 1] = (uint8_t)(l >> 16), out[m + 2] = (uint8_t)(l >> 8), out[m + 3] = (uint8_t)l;
    memcpy(out + m + 4, data, d);
    return m + 4 + d;
}

static int first(pg_scram_t *x, const pg_scram_verifier_t *v, const char *mech, const char *data, long len_field)
{
    uint8_t body[2048];
    char out[1200];
    size_t n = initial(body, mech, data, len_field), olen = 0;
    memset(x, 0, sizeof(*x));
    return pg_scram_first(x, v, body, n, SNONCE, out, sizeof(out), &olen);
}

static int final(pg_scram_t *x, const pg_scram_verifier_t *v, const char *msg, char *out, size_t *olen)
{
    return pg_scram_final(x, v, (const uint8_t *)msg, strlen(msg), out, 128, olen);
}

static void test_rfc7677(void)
{
    pg_scram_verifier_t v = rfc_verifier();
    pg_scram_t x;
    uint8_t body[256];
    char out[1200];
    size_t n = initial(body, "SCRAM-SHA-256", "n,,n=user,r=" CNONCE, -2), olen = 0;
    memset(&x, 0, sizeof(x));
    CHECK(pg_scram_first(&x, &v, body, n, SNONCE, out, sizeof(out), &olen) == PG_SCRAM_OK);
    const char *got = out;
    CHECK_STREQ(got, "r=" CNONCE SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    CHECK(olen == strlen(out));
    CHECK(final(&x, &v, FINAL_NO_PROOF ",p=" PROOF, out, &olen) == PG_SCRAM_OK);
    out[olen] = '\0';
    CHECK_STREQ(got, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    /* once only */
    CHECK(final(&x, &v, FINAL_NO_PROOF ",p=" PROOF, out, &olen) == PG_SCRAM_MALFORMED);
}

static void test_wrong(void)
{
    pg_scram_verifier_t v = rfc_verifier(), other;
    pg_scram_t x;
    char out[128];
    size_t olen;
    CHECK(pg_scram_verifier("pencil2", v.salt, 4096, &other) == 0);
    CHECK(first(&x, &other, "SCRAM-SHA-256", "n,,n=user,r=" CNONCE, -2) == PG_SCRAM_OK);
    CHECK(final(&x, &other, FINAL_NO_PROOF ",p=" PROOF, out, &olen) == PG_SCRAM_WRONG);
    /* a proof of the right shape, one bit off */
    CHECK(first(&x, &v, "SCRAM-SHA-256", "n,,n=user,r=" CNONCE, -2) == PG_SCRAM_OK);
    CHECK(final(&x, &v, FINAL_NO_PROOF ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=", out, &olen) == PG_SCRAM_WRONG);
}

static void test_first_malformed(void)
{
    pg_scram_verifier_t v = rfc_verifier();
    pg_scram_t x;
    static const struct { const char *mech, *data; long len; } bad[] = {
        { "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc", -2 },
        { "SCRAM-SHA-1", "n,,n=,r=abc", -2 },
        { "SCRAM-SHA-256", "p=tls-server-end-point,,n=,r=abc", -2 },
        { "SCRAM-SHA-256", "n,a=admin,n=,r=abc", -2 },
        { "SCRAM-SHA-256", "x,,n=,r=abc", -2 },
        { "SCRAM-SHA-256", "n,,m=ext,n=,r=abc", -2 },
        { "SCRAM-SHA-256", "n,,r=abc", -2 },
        { "SCRAM-SHA-256", "n,,n=", -2 },
        { "SCRAM-SHA-256", "n,,n=u,r=", -2 },
        { "SCRAM-SHA-256", "n,,n=u,r=a b", -2 },
        { "SCRAM-SHA-256", "n,,n=u,r=abc", -1 },          /* no data */
        { "SCRAM-SHA-256", "n,,n=u,r=abc", 5 },           /* length field short */
        { "SCRAM-SHA-256", "n,,n=u,r=abc", 500 },         /* length field long */
        { "SCRAM-SHA-256", "", -2 },
        { "SCRAM-SHA-256", "n,", -2 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_MSG(first(&x, &v, bad[i].mech, bad[i].data, bad[i].len) == PG_SCRAM_MALFORMED && x.err != NULL,
                  "case %zu: %s", i, bad[i].data);
    /* truncated bodies: no mechanism terminator, no length field */
    uint8_t body[] = "SCRAM-SHA-256";
    char out[512];
    size_t olen;
    memset(&x, 0, sizeof(x));
    CHECK(pg_scram_first(&x, &v, body, 13, SNONCE, out, sizeof(out), &olen) == PG_SCRAM_MALFORMED);
    memset(&x, 0, sizeof(x));
    CHECK(pg_scram_first(&x, &v, body, 14, SNONCE, out, sizeof(out), &olen) == PG_SCRAM_MALFORMED);
    /* an over-long message */
    static char big[PG_SCRAM_MSG_MAX + 64];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "n,,n=u,r=", 9);
    CHECK(first(&x, &v, "SCRAM-SHA-256", big, -2) == PG_SCRAM_MALFORMED);
    /* "y,," (the client could bind, we offered no PLUS) is accepted */
    CHECK(first(&x, &v, "SCRAM-SHA-256", "y,,n=,r=" CNONCE, -2) == PG_SCRAM_OK);
}

static void test_final_malformed(void)
{
    pg_scram_verifier_t v = rfc_verifier();
    pg_scram_t x;
    char out[128];
    size_t olen;
    static const char *bad[] = {
        "c=eSws,r=" CNONCE SNONCE ",p=" PROOF,        /* y,, where the client said n,, */
        "c=biws,r=" CNONCE ",p=" PROOF,               /* the client's nonce only */
        "c=biws,r=" CNONCE SNONCE "x,p=" PROOF,
        "c=biws,r=" CNONCE SNONCE,                    /* no proof */
        "c=biws,r=" CNONCE SNONCE ",p=" PROOF ",x=1", /* proof not last */
        "c=biws,r=" CNONCE SNONCE ",p=dHzb",          /* short proof */
        "c=biws,r=" CNONCE SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  /* unpadded */
        "c=bi=s,r=" CNONCE SNONCE ",p=" PROOF,        /* bad base64 */
        "r=" CNONCE SNONCE ",p=" PROOF,               /* no c= */
        "c=biws",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(first(&x, &v, "SCRAM-SHA-256", "n,,n=user,r=" CNONCE, -2) == PG_SCRAM_OK);
        CHECK_MSG(final(&x, &v, bad[i], out, &olen) == PG_SCRAM_MALFORMED, "case %zu: %s", i, bad[i]);
    }
    /* a NUL inside */
    CHECK(first(&x, &v, "SCRAM-SHA-256", "n,,n=user,r=" CNONCE, -2) == PG_SCRAM_OK);
    CHECK(pg_scram_final(&x, &v, (const uint8_t *)"c=biws\0r=", 9, out, sizeof(out), &olen) == PG_SCRAM_MALFORMED);
    /* final before first */
    memset(&x, 0, sizeof(x));
    CHECK(final(&x, &v, FINAL_NO_PROOF ",p=" PROOF, out, &olen) == PG_SCRAM_MALFORMED);
}

static void test_builders(void)
{
    uint8_t out[64];
    size_t n = pg_scram_build_sasl(out, sizeof(out));
    CHECK(n == 1 + 4 + 4 + 15);
    CHECK(out[0] == 'R' && out[4] == n - 1 && out[8] == 10);
    CHECK(memcmp(out + 9, "SCRAM-SHA-256\0\0", 15) == 0);
    CHECK(pg_scram_build_continue(out, sizeof(out), "r=abc", 5) == 14 && out[8] == 11);
    CHECK(pg_scram_build_final(out, sizeof(out), "v=x", 3) == 12 && out[8] == 12);
    CHECK(pg_scram_build_continue(out, 10, "r=abc", 5) == 0);
}

int main(void)
{
    test_rfc7677();
    test_wrong();
    test_first_malformed();
    test_final_malformed();
    test_builders();
    return unit_done("pg_scram");
}
