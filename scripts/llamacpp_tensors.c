// Runs llama.cpp (the build inside the xllamacpp wheel our goldens come from) on a prompt
// and writes every tensor of its graph, to compare Formwork's forward pass with llama.cpp's
// op by op.
//
// The wheel's one extension, xllamacpp/xllamacpp.abi3.so, exports llama.cpp's C API, so a C
// program linked against it runs exactly the binary the goldens saw. Its eval callback
// (llama_context_params.cb_eval) sees every node of the graph after it is computed (names
// such as attn_norm-0, Qcur-0, kqv_out-0, ffn_out-0, l_out-0, result_output). The context
// settings are those of scripts/llamacpp_goldens.py's server: n_ctx 2048, n_batch 2048,
// n_ubatch 512, 2 threads, flash attention "auto", an f16 cache, swa_full off. The logits do
// not change when the callback is on.
//
// Build (headers from the wheel's sdist: pip download --no-deps --no-binary :all:
// xllamacpp==2026.10.11549, whose thirdparty/llama.cpp is the llama.cpp it embeds):
//
//   SO=<venv>/lib/python3.*/site-packages/xllamacpp
//   LL=<sdist>/thirdparty/llama.cpp
//   gcc -O1 -o llamacpp_tensors scripts/llamacpp_tensors.c -I$LL/include
//       -I$LL/ggml/include $SO/xllamacpp.abi3.so -lpython3.11 -Wl,-rpath,$SO
//
// (one command line).
//
// Run:
//
//   [SPLIT=a,b,...] llamacpp_tensors MODEL OUTDIR DUMP(0|1) TOKEN_ID...
//
// decodes the ids in one llama_decode call, or in calls ending at the positions SPLIT lists
// (llama.cpp's server cuts a prompt 516 and 4 tokens before its end for a model with a
// sliding window). With DUMP=1 each call's nodes go to OUTDIR/d<call>/<index>_<name>.bin:
// six int64 (ne0..ne3, ggml type, ggml op) then the elements in logical order (ne0 fastest;
// f32, or f16 for a cache view). OUTDIR/logits.bin holds the last row's logits (f32).

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char g_dir[1024];
static int g_index = 0;
static int g_dump = 0;

static bool on_node(struct ggml_tensor * t, bool ask, void * user_data) {
    (void) user_data;
    if (ask) {
        return g_dump; // true: see every node
    }
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16) {
        return true;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/%04d_%s.bin", g_dir, g_index++, t->name);
    FILE * f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return false;
    }
    const int64_t header[6] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3], t->type, t->op};
    fwrite(header, sizeof header, 1, f);
    const size_t size = t->type == GGML_TYPE_F32 ? 4 : 2;
    const char * data = (const char *) t->data;
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++)
                    fwrite(data + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3], size, 1, f);
    fclose(f);
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: [SPLIT=a,b,...] %s MODEL OUTDIR DUMP(0|1) TOKEN_ID...\n", argv[0]);
        return 1;
    }
    const char * outdir = argv[2];
    g_dump = atoi(argv[3]);
    const int n = argc - 4;
    llama_token * tokens = malloc(sizeof(llama_token) * n);
    for (int i = 0; i < n; i++) {
        tokens[i] = atoi(argv[4 + i]);
    }

    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        return 2;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 2048;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.swa_full = false;
    cp.kv_unified = false;
    cp.cb_eval = on_node;
    cp.cb_eval_user_data = NULL;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        return 3;
    }

    mkdir(outdir, 0755);
    const char * split = getenv("SPLIT");
    int start = 0;
    for (int call = 0; start < n; call++) {
        int end = n;
        if (split && *split) {
            end = atoi(split);
            const char * comma = strchr(split, ',');
            split = comma ? comma + 1 : "";
        }
        if (end > n || end <= start) {
            end = n;
        }
        snprintf(g_dir, sizeof g_dir, "%s/d%d", outdir, call);
        if (g_dump) {
            mkdir(g_dir, 0755);
        }
        g_index = 0;
        if (llama_decode(ctx, llama_batch_get_one(tokens + start, end - start))) {
            fprintf(stderr, "llama_decode failed\n");
            return 4;
        }
        start = end;
    }

    const float * logits = llama_get_logits_ith(ctx, -1);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    char path[1200];
    snprintf(path, sizeof path, "%s/logits.bin", outdir);
    FILE * f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 5;
    }
    fwrite(logits, sizeof(float), n_vocab, f);
    fclose(f);

    llama_free(ctx);
    llama_model_free(model);
    free(tokens);
    return 0;
}
