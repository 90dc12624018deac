# frozen_string_literal: true

# The benchmark's app, the same for every server: a small page, and an
# upload endpoint that reads the whole body (so slow bodies reach it).
require "digest"

PAGE = "Hello, world! #{'.' * 100}\n"

run lambda { |env|
  if env["PATH_INFO"] == "/upload"
    digest = Digest::SHA256.new
    size = 0
    while (chunk = env["rack.input"].read(1 << 16))
      digest << chunk
      size += chunk.bytesize
    end
    [200, { "content-type" => "text/plain" }, ["#{size} #{digest.hexdigest}"]]
  else
    [200, { "content-type" => "text/plain", "content-length" => PAGE.bytesize.to_s }, [PAGE]]
  end
}
