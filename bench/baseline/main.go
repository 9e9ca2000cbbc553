// Command baseline is the ceiling for tokend's load benchmarks: a bare
// net/http server that answers every request with 204 and does nothing
// else. bench/run.sh drives it and tokend with the same load.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18082", "address to listen on")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
}
