// Added to fake-gcs-server by scripts/gcs.sh (sluice's test services), two parts of Google
// Cloud Storage's XML API that fake-gcs-server v1.56.1 lacks (its issue 331) and the
// object_store crate (the Rust client sluice's Delta tables go through) uses:
//   - the simple object upload, `PUT /<bucket>/<object>`, with its generation precondition
//     header (`x-goog-if-generation-match`); the precondition is the backend's own check, the
//     one its JSON API uploads use;
//   - `start-after` on object listings (the emulator's XML listing ignored it), which Delta log
//     readers use to list the commits after a version.

package fakestorage

import (
	"encoding/xml"
	"net/http"
	"strconv"
	"strings"

	"github.com/fsouza/fake-gcs-server/internal/backend"
	"github.com/gorilla/mux"
)

// isXMLUpload matches a plain XML API upload: no JSON API upload type, no signed URL, no copy.
func isXMLUpload(r *http.Request, _ *mux.RouteMatch) bool {
	q := r.URL.Query()
	return q.Get("uploadType") == "" && q.Get("X-Goog-Algorithm") == "" &&
		r.Header.Get("x-goog-copy-source") == ""
}

func (s *Server) xmlUploadObject(w http.ResponseWriter, r *http.Request) {
	defer r.Body.Close()
	vars := unescapeMuxVars(mux.Vars(r))
	bucketName, name := vars["bucketName"], vars["objectName"]
	if _, err := s.backend.GetBucket(bucketName); err != nil {
		http.Error(w, "no such bucket", http.StatusNotFound)
		return
	}
	var conditions backend.Conditions = backend.NoConditions{}
	if h := r.Header.Get("x-goog-if-generation-match"); h != "" {
		gen, err := strconv.ParseInt(h, 10, 64)
		if err != nil {
			http.Error(w, "bad x-goog-if-generation-match", http.StatusBadRequest)
			return
		}
		conditions = generationCondition{ifGenerationMatch: &gen}
	}
	metaData := make(map[string]string)
	for key := range r.Header {
		lower := strings.ToLower(key)
		if k := strings.TrimPrefix(lower, "x-goog-meta-"); k != lower {
			metaData[k] = r.Header.Get(key)
		}
	}
	obj := StreamingObject{
		ObjectAttrs: ObjectAttrs{
			BucketName:  bucketName,
			Name:        name,
			ContentType: r.Header.Get(contentTypeHeader),
			Metadata:    metaData,
		},
		Content: notImplementedSeeker{r.Body},
	}
	obj, err := s.createObject(obj, conditions)
	if err == backend.PreConditionFailed {
		http.Error(w, "precondition failed", http.StatusPreconditionFailed)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer obj.Close()
	w.Header().Set("ETag", obj.Etag)
	w.Header().Set("x-goog-generation", strconv.FormatInt(obj.Generation, 10))
	w.WriteHeader(http.StatusOK)
}

// xmlListObjectsAfter is the emulator's XML listing with `start-after`: only keys (and common
// prefixes) after it, as GCS lists them.
func (s *Server) xmlListObjectsAfter(r *http.Request) xmlResponse {
	resp := s.xmlListObjects(r)
	after := r.URL.Query().Get("start-after")
	raw, ok := resp.data.([]byte)
	if after == "" || resp.status != http.StatusOK || !ok {
		return resp
	}
	var result ListBucketResult
	if err := xml.Unmarshal(raw, &result); err != nil {
		return xmlResponse{status: http.StatusInternalServerError, errorMessage: err.Error()}
	}
	contents := result.Contents[:0]
	for _, c := range result.Contents {
		if c.Key > after {
			contents = append(contents, c)
		}
	}
	result.Contents = contents
	result.KeyCount = len(contents)
	prefixes := result.CommonPrefixes[:0]
	for _, p := range result.CommonPrefixes {
		if p.Prefix > after {
			prefixes = append(prefixes, p)
		}
	}
	result.CommonPrefixes = prefixes
	out, err := xml.Marshal(result)
	if err != nil {
		return xmlResponse{status: http.StatusInternalServerError, errorMessage: err.Error()}
	}
	return xmlResponse{status: http.StatusOK, data: []byte(xml.Header + string(out))}
}
