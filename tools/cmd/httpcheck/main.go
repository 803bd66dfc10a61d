// Command httpcheck is the healthcheck of taskyard's container images,
// which have no shell and no curl: it GETs a URL and exits 0 when the
// answer is 2xx, 1 otherwise (Docker's HEALTHCHECK convention).
//
//	httpcheck [-timeout 3s] URL
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 3*time.Second, "request timeout")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: httpcheck [-timeout 3s] URL  (exit 0 on a 2xx answer, 1 otherwise)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpcheck:", err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "httpcheck: %s: %s: %s\n", flag.Arg(0), resp.Status, body)
		os.Exit(1)
	}
}
