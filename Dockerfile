# syntax=docker/dockerfile:1
# tokend in a container: a static binary on distroless, run as a non-root
# user, with its database on a volume. See the README, "Running in Docker".
#
#   docker build -t tokend .
#   docker run -d --name tokend -p 127.0.0.1:8080:8080 -v tokend-data:/data tokend

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# A static binary: no C library to find at run time. The build context
# holds no .git (see .dockerignore), so `tokend version` says the build
# carries no VCS revision; tag the image instead.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/tokend . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokend /tokend
# The volume's mount point, owned by the nonroot user (65532) so that a new
# named volume starts out writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV TOKEND_ADDR=0.0.0.0:8080 \
    TOKEND_DB=/data/tokend.db
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 CMD ["/tokend","healthcheck"]
ENTRYPOINT ["/tokend"]
CMD ["serve"]
