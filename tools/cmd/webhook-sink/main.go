// Command webhook-sink records the alerts exitwatch POSTs (its
// --alert-webhook, or a webhook route) and serves them back, so the e2e
// suite can assert what was delivered.
//
//	POST /<anything>   record the body (and answer 204)
//	GET  /received     every recorded body, as a JSON array of
//	                   {"path", "body"} (body verbatim when JSON)
//	GET  /healthz      200
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

type received struct {
	Path string          `json:"path"`
	At   time.Time       `json:"at"`
	Body json.RawMessage `json:"body"`
}

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()
	var (
		mu   sync.Mutex
		recs []received
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		out := recs
		if out == nil {
			out = []received{}
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !json.Valid(b) {
			b, _ = json.Marshal(string(b))
		}
		mu.Lock()
		recs = append(recs, received{Path: r.URL.Path, At: time.Now().UTC(), Body: b})
		mu.Unlock()
		log.Printf("webhook-sink: %s %d bytes", r.URL.Path, len(b))
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "webhook-sink:", err)
		os.Exit(1)
	}
}
