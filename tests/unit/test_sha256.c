/*
 * test_sha256.c: SHA-256 (common/sha256.c) against the FIPS 180-2 / NIST example digests, the
 * padding boundaries (55, 56, 63, 64 ... bytes, digests from Python's hashlib), and incremental
 * hashing split at every offset.
 */
#include "sha256.h"
#include "test.h"

static void check_hex(const void *data, size_t n, const char *want)
{
    uint8_t d[32];
    char hex[65];
    sha256(data, n, d);
    sha256_hex(d, hex);
    CHECK_MSG(strcmp(hex, want) == 0, "%zu bytes: got %s, want %s", n, hex, want);
}

static void test_nist_vectors(void)
{
    check_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_hex(m448, strlen(m448),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_hex(m896, strlen(m896),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void)
{
    /* fed in uneven pieces, so partial blocks are joined across updates */
    char a[1000];
    memset(a, 'a', sizeof a);
    Sha256 c;
    sha256_init(&c);
    size_t left = 1000000, piece = 1;
    while (left) {
        size_t n = piece < left ? piece : left;
        sha256_update(&c, a, n);
        left -= n;
        piece = piece % 977 + 13; /* 1 .. 989 bytes */
    }
    uint8_t d[32];
    char hex[65];
    sha256_final(&c, d);
    sha256_hex(d, hex);
    CHECK_MSG(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
              "%s", hex);
}

static void test_padding_boundaries(void)
{
    static const struct {
        size_t n;
        const char *hex;
    } cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
        {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
    };
    char a[128];
    memset(a, 'a', sizeof a);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_hex(a, cases[i].n, cases[i].hex);
}

static void test_split_at_every_offset(void)
{
    uint8_t msg[300], whole[32], parts[32];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 31 + 7);
    sha256(msg, sizeof msg, whole);
    for (size_t cut = 0; cut <= sizeof msg; cut++) {
        Sha256 c;
        sha256_init(&c);
        sha256_update(&c, msg, cut);
        sha256_update(&c, msg + cut, sizeof msg - cut);
        sha256_final(&c, parts);
        CHECK_MSG(memcmp(whole, parts, 32) == 0, "split at %zu", cut);
    }
}

int main(void)
{
    TEST_RUN(test_nist_vectors);
    TEST_RUN(test_million_a);
    TEST_RUN(test_padding_boundaries);
    TEST_RUN(test_split_at_every_offset);
    return test_summary("sha256");
}
