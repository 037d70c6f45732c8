package admin

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "write the OpenAPI document to api/openapi.json")

// committedOpenAPI is the document the repository publishes.
const committedOpenAPI = "../api/openapi.json"

// The committed document is the one the code makes: change a route or a
// payload type and this fails until `go generate ./admin/` writes it again.
func TestOpenAPI_MatchesTheCommittedFile(t *testing.T) {
	t.Parallel()
	doc, err := OpenAPI()
	require.NoError(t, err)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(committedOpenAPI), 0o750))
		require.NoError(t, os.WriteFile(committedOpenAPI, doc, 0o644)) //nolint:gosec // G306: a published document
	}
	committed, err := os.ReadFile(committedOpenAPI)
	require.NoError(t, err)
	require.Equal(t, string(committed), string(doc), "api/openapi.json is not what the code makes: run go generate ./admin/")
}

// Every route of the API is in the document: each one the table
// registers has operations at paths the route serves, and no /api/v1
// route is registered outside the table.
func TestOpenAPI_EveryRouteIsDocumented(t *testing.T) {
	t.Parallel()
	full := &Server{deps: Deps{Shop: &Shop{}, Inspector: new(asynq.Inspector)}}
	for _, rt := range apiRoutes() {
		name := rt.method + " " + rt.pattern
		require.NotNil(t, rt.handler(full), "%s: a server with every dependency serves it", name)
		require.NotEmpty(t, rt.ops, "%s has no operation in the document", name)
		only := http.NewServeMux()
		only.Handle(name, http.NotFoundHandler())
		for _, po := range rt.ops {
			// The operation's path, with a value in each parameter,
			// must reach the route.
			path := pathParam.ReplaceAllString(po.path, "x")
			_, pattern := only.Handler(httptest.NewRequestWithContext(t.Context(), rt.method, path, nil))
			require.Equal(t, name, pattern, "%s is documented at %s, which the route does not serve", name, po.path)
		}
	}

	// No other Handle or HandleFunc call registers a pattern under
	// /api/: those of the table's loop aside, every pattern must be a
	// constant expression (literals and the package's constants) that
	// does not name /api/.
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		require.NoError(t, err)
		parsed = append(parsed, f)
	}
	consts := stringConsts(parsed)
	const tableLoop = `rt.method + " " + rt.pattern`
	registered := 0
	for _, f := range parsed {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			at := fset.Position(call.Pos())
			if types.ExprString(call.Args[0]) == tableLoop {
				registered++
				return true
			}
			pattern, ok := consts.eval(call.Args[0])
			require.True(t, ok, "%s: cannot tell what %s registers: register /api/ routes in apiRoutes, others with a constant pattern", at, types.ExprString(call.Args[0]))
			require.NotContains(t, pattern, "/api/", "%s: %s is registered outside apiRoutes, so the document lacks it", at, pattern)
			return true
		})
	}
	require.Equal(t, 1, registered, "apiRoutes are registered in one loop")
}

// constExprs are a package's constant declarations, by name.
type constExprs map[string]ast.Expr

// stringConsts returns the constants files declare at package level.
func stringConsts(files []*ast.File) constExprs {
	consts := constExprs{}
	for _, vs := range constSpecs(files) {
		for i, name := range vs.Names {
			if i < len(vs.Values) {
				consts[name.Name] = vs.Values[i]
			}
		}
	}
	return consts
}

// constSpecs returns the package-level constant declarations of files.
func constSpecs(files []*ast.File) []*ast.ValueSpec {
	var specs []*ast.ValueSpec
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				if vs, ok := spec.(*ast.ValueSpec); ok {
					specs = append(specs, vs)
				}
			}
		}
	}
	return specs
}

// eval evaluates a string constant expression: literals, the constants,
// parentheses and +.
func (c constExprs) eval(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.Ident:
		if v, ok := c[e.Name]; ok {
			return c.eval(v)
		}
	case *ast.ParenExpr:
		return c.eval(e.X)
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			x, okx := c.eval(e.X)
			y, oky := c.eval(e.Y)
			return x + y, okx && oky
		}
	}
	return "", false
}

// The document lists every state the ledger declares for an order.
func TestOpenAPI_ListsEveryOrderState(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../jobs/ledger/*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		require.NoError(t, err)
		parsed = append(parsed, f)
	}
	var declared []string
	for _, vs := range constSpecs(parsed) {
		if vs.Type == nil || types.ExprString(vs.Type) != "State" {
			continue
		}
		for _, v := range vs.Values {
			s, ok := stringConsts(nil).eval(v)
			require.True(t, ok, "%s: a State that is not a literal", fset.Position(v.Pos()))
			declared = append(declared, s)
		}
	}
	var listed []string
	for _, st := range orderStates {
		listed = append(listed, string(st))
	}
	require.NotEmpty(t, declared)
	require.ElementsMatch(t, declared, listed, "orderStates (openapi.go) are not ledger's States")
}
