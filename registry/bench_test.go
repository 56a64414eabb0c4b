package registry

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkOpenCheck opens a generated root of about 700 files and lists
// its problems; in the same run it only reads every file (the baseline)
// and reports how many times slower loading and checking is than reading
// ("x-read").
func BenchmarkOpenCheck(b *testing.B) {
	dir := b.TempDir()
	genLargeRoot(b, dir, 600)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		r, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		r.Problems()
		r.Close()
	}
	full := time.Since(start)
	start = time.Now()
	for i := 0; i < b.N; i++ {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, Ext) || d.Name() == MetadataFile) {
				_, _ = os.ReadFile(p)
			}
			return nil
		})
	}
	raw := time.Since(start)
	b.ReportMetric(float64(full)/float64(raw), "x-read")
	b.ReportMetric(float64(full.Milliseconds())/float64(b.N), "ms/open+check")
}
