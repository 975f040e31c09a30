/* loadtest_report: formatting of the load tester's status line and summaries. */
#include "loadtest_report.h"

#include <string.h>

#include "loadtest_run.h"

static double ms(uint64_t us) { return (double)us / 1000.0; }

static uint64_t total_doc_len(const struct lt_run *run)
{
    uint64_t t = 0;
    for (int i = 0; i < run->n_docs; i++) t += run->docs[i].len;
    return t;
}

void lt_report_status(struct lt_run *run, FILE *f)
{
    struct lt_window *w = &run->win;
    double t = (double)(lt_now_us() - run->t0_us) / 1e6;
    fprintf(f, "[%6.1fs] connections %d/%d", t, run->live, run->n_clients);
    if (run->c.connect_errors || run->c.dropped)
        fprintf(f, " (failed %llu, dropped %llu)", (unsigned long long)run->c.connect_errors,
                (unsigned long long)run->c.dropped);
    fprintf(f, "  document %llu bytes%s", (unsigned long long)total_doc_len(run),
            run->n_docs > 1 ? " in all" : "");
    if (w->n)
        fprintf(f, "  screen-to-screen avg %.1f ms, min %.1f ms, max %.1f ms",
                ms(w->sum_us) / (double)w->n, ms(w->min_us), ms(w->max_us));
    else
        fprintf(f, "  screen-to-screen -");
    fprintf(f, "  nacks %llu\n", (unsigned long long)run->c.nacks);
    fflush(f);
    memset(w, 0, sizeof *w);
}

static void hist_line(FILE *f, const char *name, const struct lt_hist *h)
{
    if (!h->count) {
        fprintf(f, "%-18s no samples\n", name);
        return;
    }
    fprintf(f,
            "%-18s avg %.2f  p50 %.2f  p95 %.2f  p99 %.2f  min %.2f  max %.2f ms  (%llu samples)\n",
            name, lt_hist_mean(h) / 1000.0, ms(lt_hist_quantile(h, 0.50)),
            ms(lt_hist_quantile(h, 0.95)), ms(lt_hist_quantile(h, 0.99)), ms(h->min_us),
            ms(h->max_us), (unsigned long long)h->count);
}

static double rate(uint64_t n, double s) { return s > 0 ? (double)n / s : 0; }

static double nack_rate(const struct lt_run *run)
{
    uint64_t answered = run->c.acks + run->c.nacks + run->c.readonly_acks;
    return answered ? (double)run->c.nacks / (double)answered : 0;
}

void lt_report_summary(const struct lt_run *run, const struct lt_result *r, FILE *f)
{
    const struct lt_counts *c = &run->c;
    fprintf(f, "\n--- load test summary: %s, %.1f s ---\n", run->opts->url, r->run_s);
    fprintf(
        f, "%-18s %llu of %d connected; %llu failed to connect, %llu dropped, %llu server ERRORs\n",
        "connections", (unsigned long long)c->connected, r->expected,
        (unsigned long long)c->connect_errors, (unsigned long long)c->dropped,
        (unsigned long long)c->server_errors);
    if (r->not_started)
        fprintf(f, "%-18s %d not started (interrupted before their connect time)\n", "",
                r->not_started);
    fprintf(f, "%-18s %llu bytes in %d document%s\n", "document",
            (unsigned long long)total_doc_len(run), run->n_docs, run->n_docs > 1 ? "s" : "");
    fprintf(f, "%-18s %llu sent, %llu ACKed, %llu NACKed (%.2f %%), %llu refused\n", "changes",
            (unsigned long long)c->appends_sent, (unsigned long long)c->acks,
            (unsigned long long)c->nacks, 100.0 * nack_rate(run),
            (unsigned long long)c->readonly_acks);
    fprintf(f, "%-18s %llu (%.0f/s), %llu bytes\n", "deliveries", (unsigned long long)c->deliveries,
            rate(c->deliveries, r->run_s), (unsigned long long)c->delivered_bytes);
    fprintf(f, "%-18s %llu bytes in, %llu bytes out%s\n", "on the wire",
            (unsigned long long)run->ws.wire_in, (unsigned long long)run->ws.wire_out,
            run->ws.compression ? " (permessage-deflate offered)" : "");
    hist_line(f, "screen-to-screen", &run->s2s);
    hist_line(f, "ACK round trip", &run->ack_rtt);
    if (c->gaps || c->duplicate_bytes || c->ack_mismatches)
        fprintf(f, "%-18s %llu gaps, %llu duplicate bytes, %llu ACK mismatches\n", "stream faults",
                (unsigned long long)c->gaps, (unsigned long long)c->duplicate_bytes,
                (unsigned long long)c->ack_mismatches);
    if (r->check_skipped)
        fprintf(f, "%-18s SKIPPED (interrupted)\n", "data check");
    else if (r->data_ok)
        fprintf(f, "%-18s PASSED: %d clients hold exactly the stored document%s\n", "data check",
                r->checked, run->n_docs > 1 ? "s" : "");
    else
        fprintf(f,
                "%-18s FAILED: %d of %d clients differ from the stored document; %d document%s not "
                "fetched%s\n",
                "data check", r->mismatched, r->checked, r->docs_unchecked,
                r->docs_unchecked == 1 ? "" : "s",
                r->drain_timed_out ? " (some clients were still behind when the check ran)" : "");
    fprintf(f, "%-18s %llu -> %s\n", "errors", r->errors, r->ok ? "OK" : "FAILED");
    fflush(f);
}

static void json_hist(FILE *f, const char *name, const struct lt_hist *h)
{
    fprintf(f,
            "\"%s\":{\"count\":%llu,\"avg\":%.3f,\"min\":%.3f,\"p50\":%.3f,\"p95\":%.3f,"
            "\"p99\":%.3f,\"max\":%.3f}",
            name, (unsigned long long)h->count, lt_hist_mean(h) / 1000.0,
            ms(h->count ? h->min_us : 0), ms(lt_hist_quantile(h, 0.50)),
            ms(lt_hist_quantile(h, 0.95)), ms(lt_hist_quantile(h, 0.99)), ms(h->max_us));
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void lt_report_json(const struct lt_run *run, const struct lt_result *r, FILE *f)
{
    const struct lt_counts *c = &run->c;
    const struct lt_opts *o = run->opts;
    fprintf(f, "{\"url\":");
    json_str(f, o->url);
    fprintf(f, ",\"docid\":");
    json_str(f, o->docid);
    fprintf(f,
            ",\"teachers\":%d,\"students\":%d,\"docs\":%d,\"change_bytes\":%zu,\"delay_ms\":%g,"
            "\"duration_s\":%.3f,\"expected\":%d,\"connected\":%llu,\"not_connected\":%d,"
            "\"connect_errors\":%llu,\"dropped\":%llu,\"server_errors\":%llu,"
            "\"doc_bytes\":%llu,\"appends_sent\":%llu,\"acks\":%llu,\"nacks\":%llu,"
            "\"refused\":%llu,\"nack_rate\":%.5f,\"deliveries\":%llu,\"deliveries_per_s\":%.1f,"
            "\"delivered_bytes\":%llu,\"gaps\":%llu,\"duplicate_bytes\":%llu,"
            "\"ack_mismatches\":%llu,\"untimed\":%llu,\"compression\":%s,"
            "\"wire_bytes_in\":%llu,\"wire_bytes_out\":%llu,",
            o->teachers, o->students, o->docs, o->change_bytes, o->delay_ms, r->run_s, r->expected,
            (unsigned long long)c->connected, r->not_connected,
            (unsigned long long)c->connect_errors, (unsigned long long)c->dropped,
            (unsigned long long)c->server_errors, (unsigned long long)total_doc_len(run),
            (unsigned long long)c->appends_sent, (unsigned long long)c->acks,
            (unsigned long long)c->nacks, (unsigned long long)c->readonly_acks, nack_rate(run),
            (unsigned long long)c->deliveries, rate(c->deliveries, r->run_s),
            (unsigned long long)c->delivered_bytes, (unsigned long long)c->gaps,
            (unsigned long long)c->duplicate_bytes, (unsigned long long)c->ack_mismatches,
            (unsigned long long)c->untimed, run->ws.compression ? "true" : "false",
            (unsigned long long)run->ws.wire_in, (unsigned long long)run->ws.wire_out);
    json_hist(f, "s2s_ms", &run->s2s);
    fputc(',', f);
    json_hist(f, "ack_rtt_ms", &run->ack_rtt);
    fprintf(f,
            ",\"data_check\":{\"ok\":%s,\"skipped\":%s,\"checked\":%d,\"mismatched\":%d,"
            "\"docs_unchecked\":%d,\"drain_timed_out\":%s},\"interrupted\":%s,"
            "\"not_started\":%d,\"errors\":%llu,\"ok\":%s}\n",
            r->data_ok ? "true" : "false", r->check_skipped ? "true" : "false", r->checked,
            r->mismatched, r->docs_unchecked, r->drain_timed_out ? "true" : "false",
            r->interrupted ? "true" : "false", r->not_started, r->errors, r->ok ? "true" : "false");
    fflush(f);
}
