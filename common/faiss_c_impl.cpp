/* faiss_c_impl.cpp — the part of FAISS's official C API (the headers in faiss/c_api/) that lvd uses,
 * implemented over Debian's libfaiss.a, which ships the C API headers but not their implementation.
 *
 * Every function keeps the exact signature of its declaration in the official headers (included below, so the
 * compiler checks them) and the official semantics: functions returning int return 0 on success, or on a C++
 * exception -2 (faiss::FaissException), -4 (other std::exception) or -1 (anything else), after recording the
 * exception for faiss_get_last_error() in the thread-local faiss_last_exception of c_api/error_impl.h. No
 * exception crosses into C. Only what lvd calls is here; any other C API function stays undefined, so a
 * caller of one fails at link time rather than at run time.
 *
 * Implemented (see common/knn.c for the use):
 *   error_c.h          faiss_get_last_error
 *   Index_c.h          faiss_Index_free, _d, _is_trained, _ntotal, _metric_type, _train, _add, _add_with_ids,
 *                      _search, _reset
 *   index_factory_c.h  faiss_index_factory
 *   IndexFlat_c.h      faiss_IndexFlatIP_new_with, faiss_IndexFlat_cast, faiss_IndexFlat_xb
 *   IndexIVF_c.h       faiss_IndexIVF_cast, faiss_IndexIVF_nlist, faiss_IndexIVF_nprobe, faiss_IndexIVF_set_nprobe,
 *                      faiss_IndexIVF_quantizer
 *   IndexIVFFlat_c.h   faiss_IndexIVFFlat_cast
 *   MetaIndexes_c.h    faiss_IndexIDMap_cast, faiss_IndexIDMap_sub_index
 *   AutoTune_c.h       faiss_ParameterSpace_new, faiss_ParameterSpace_free,
 *                      faiss_ParameterSpace_set_index_parameter
 *   index_io_c.h       faiss_write_index_fname, faiss_read_index_fname
 */
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/error_impl.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <faiss/AutoTune.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <exception>
#include <stdexcept>

thread_local std::exception_ptr faiss_last_exception;

namespace {

/* Runs f, turning an exception into the C API's error code and recording it for faiss_get_last_error(). */
template <typename F>
int guarded(F&& f) {
    try {
        f();
    } catch (faiss::FaissException&) {
        faiss_last_exception = std::current_exception();
        return -2;
    } catch (std::exception&) {
        faiss_last_exception = std::current_exception();
        return -4;
    } catch (...) {
        faiss_last_exception = std::make_exception_ptr(std::runtime_error("Unknown error"));
        return -1;
    }
    return 0;
}

faiss::Index* ix(FaissIndex* p) {
    return reinterpret_cast<faiss::Index*>(p);
}
const faiss::Index* ix(const FaissIndex* p) {
    return reinterpret_cast<const faiss::Index*>(p);
}
FaissIndex* handle(faiss::Index* p) {
    return reinterpret_cast<FaissIndex*>(p);
}

} // namespace

extern "C" {

/* error_c.h: the message of the last recorded exception of this thread, NULL if there was none. The pointer
 * stays valid while the exception is recorded (until the next failure on this thread). */
const char* faiss_get_last_error() {
    if (!faiss_last_exception) return nullptr;
    try {
        std::rethrow_exception(faiss_last_exception);
    } catch (std::exception& e) {
        return e.what();
    } catch (...) {
        return "Unknown error";
    }
}

/* Index_c.h */
void faiss_Index_free(FaissIndex* obj) {
    delete ix(obj);
}

int faiss_Index_d(const FaissIndex* obj) {
    return static_cast<int>(ix(obj)->d);
}

int faiss_Index_is_trained(const FaissIndex* obj) {
    return ix(obj)->is_trained ? 1 : 0;
}

idx_t faiss_Index_ntotal(const FaissIndex* obj) {
    return ix(obj)->ntotal;
}

FaissMetricType faiss_Index_metric_type(const FaissIndex* obj) {
    return static_cast<FaissMetricType>(ix(obj)->metric_type);
}

int faiss_Index_train(FaissIndex* index, idx_t n, const float* x) {
    return guarded([&] { ix(index)->train(n, x); });
}

int faiss_Index_add(FaissIndex* index, idx_t n, const float* x) {
    return guarded([&] { ix(index)->add(n, x); });
}

int faiss_Index_add_with_ids(FaissIndex* index, idx_t n, const float* x, const idx_t* xids) {
    return guarded([&] { ix(index)->add_with_ids(n, x, xids); });
}

int faiss_Index_search(const FaissIndex* index, idx_t n, const float* x, idx_t k, float* distances,
                       idx_t* labels) {
    return guarded([&] { ix(index)->search(n, x, k, distances, labels); });
}

int faiss_Index_reset(FaissIndex* index) {
    return guarded([&] { ix(index)->reset(); });
}

/* index_factory_c.h */
int faiss_index_factory(FaissIndex** p_index, int d, const char* description, FaissMetricType metric) {
    return guarded([&] {
        *p_index = handle(faiss::index_factory(d, description, static_cast<faiss::MetricType>(metric)));
    });
}

/* IndexFlat_c.h */
int faiss_IndexFlatIP_new_with(FaissIndexFlatIP** p_index, idx_t d) {
    return guarded([&] { *p_index = reinterpret_cast<FaissIndexFlatIP*>(new faiss::IndexFlatIP(d)); });
}

FaissIndexFlat* faiss_IndexFlat_cast(FaissIndex* index) {
    return reinterpret_cast<FaissIndexFlat*>(dynamic_cast<faiss::IndexFlat*>(ix(index)));
}

/* The flat index's storage: ntotal * d floats (FAISS 1.7.3 keeps them as bytes in IndexFlatCodes::codes). */
void faiss_IndexFlat_xb(FaissIndexFlat* index, float** p_xb, size_t* p_size) {
    auto* f = reinterpret_cast<faiss::IndexFlat*>(index);
    *p_xb = f->get_xb();
    *p_size = static_cast<size_t>(f->ntotal) * static_cast<size_t>(f->d);
}

/* IndexIVF_c.h */
FaissIndexIVF* faiss_IndexIVF_cast(FaissIndex* index) {
    return reinterpret_cast<FaissIndexIVF*>(dynamic_cast<faiss::IndexIVF*>(ix(index)));
}

size_t faiss_IndexIVF_nlist(const FaissIndexIVF* obj) {
    return reinterpret_cast<const faiss::IndexIVF*>(obj)->nlist;
}

size_t faiss_IndexIVF_nprobe(const FaissIndexIVF* obj) {
    return reinterpret_cast<const faiss::IndexIVF*>(obj)->nprobe;
}

void faiss_IndexIVF_set_nprobe(FaissIndexIVF* obj, size_t val) {
    reinterpret_cast<faiss::IndexIVF*>(obj)->nprobe = val;
}

FaissIndex* faiss_IndexIVF_quantizer(const FaissIndexIVF* obj) {
    return handle(reinterpret_cast<const faiss::IndexIVF*>(obj)->quantizer);
}

/* IndexIVFFlat_c.h */
FaissIndexIVFFlat* faiss_IndexIVFFlat_cast(FaissIndex* index) {
    return reinterpret_cast<FaissIndexIVFFlat*>(dynamic_cast<faiss::IndexIVFFlat*>(ix(index)));
}

/* MetaIndexes_c.h */
FaissIndexIDMap* faiss_IndexIDMap_cast(FaissIndex* index) {
    return reinterpret_cast<FaissIndexIDMap*>(dynamic_cast<faiss::IndexIDMap*>(ix(index)));
}

FaissIndex* faiss_IndexIDMap_sub_index(FaissIndexIDMap* index) {
    return handle(reinterpret_cast<faiss::IndexIDMap*>(index)->index);
}

/* AutoTune_c.h */
int faiss_ParameterSpace_new(FaissParameterSpace** space) {
    return guarded([&] { *space = reinterpret_cast<FaissParameterSpace*>(new faiss::ParameterSpace()); });
}

void faiss_ParameterSpace_free(FaissParameterSpace* obj) {
    delete reinterpret_cast<faiss::ParameterSpace*>(obj);
}

int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace* space, FaissIndex* cindex,
                                             const char* name, double value) {
    return guarded([&] {
        reinterpret_cast<const faiss::ParameterSpace*>(space)->set_index_parameter(ix(cindex), name, value);
    });
}

/* index_io_c.h */
int faiss_write_index_fname(const FaissIndex* idx, const char* fname) {
    return guarded([&] { faiss::write_index(ix(idx), fname); });
}

int faiss_read_index_fname(const char* fname, int io_flags, FaissIndex** p_out) {
    return guarded([&] { *p_out = handle(faiss::read_index(fname, io_flags)); });
}

} // extern "C"
