package main

import (
	_ "embed"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// openapiYAML is the OpenAPI 3.1 description of the JSON API and of the
// forward-auth endpoints. Every request and answer of the API tests is
// checked against it, so it says what the code does.
//
//go:embed openapi.yaml
var openapiYAML []byte

// handleOpenAPI serves the API description.
func (s *server) handleOpenAPI(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openapiYAML)
}
